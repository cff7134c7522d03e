package main

import (
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// BaseURI is the base of the generated schema's $id: the SchemaBaseURI of
// package schemas, where the generated file lives.
const BaseURI = "https://github.com/defender-enricher/defender-enricher/schemas/"

// primitives maps the OCSF base data types to JSON Schema types. json_t
// (any JSON value) maps to no type at all.
var primitives = map[string]string{
	"boolean_t": "boolean",
	"float_t":   "number",
	"integer_t": "integer",
	"json_t":    "",
	"long_t":    "integer",
	"string_t":  "string",
}

// genericObject is the type of OCSF's generic object: any JSON object.
const genericObject = "object"

// datetimeProfile is the profile that adds, beside each timestamp_t
// attribute NAME, an attribute NAME_dt of type datetime_t. The profile's
// file declares no attributes: the rule is OCSF's convention.
const datetimeProfile = "datetime"

// Result is what Generate produces.
type Result struct {
	// Schema is the JSON Schema document, encoded, ending in a newline.
	Schema []byte
	// Files are the schema folder's files that were read, sorted.
	Files []string
}

// Generate builds the JSON Schema of one event class of the OCSF schema
// folder fsys.
func Generate(fsys fs.FS, class string) (*Result, error) {
	src, err := newSource(fsys)
	if err != nil {
		return nil, err
	}
	b := &builder{src: src, defs: make(map[string]any)}
	doc, err := b.class(class)
	if err != nil {
		return nil, err
	}
	return &Result{Schema: encode(doc), Files: src.Files()}, nil
}

type builder struct {
	src      *source
	defs     map[string]any // $defs: objects by name, data types by name
	datetime bool           // the datetime profile applies
}

func (b *builder) class(name string) (map[string]any, error) {
	c, err := b.src.Class(name)
	if err != nil {
		return nil, err
	}
	if c.UID < 0 {
		return nil, fmt.Errorf("class %s has no uid", name)
	}
	if c.Category == "" {
		return nil, fmt.Errorf("class %s has no category", name)
	}
	catUID, err := b.src.category(c.Category)
	if err != nil {
		return nil, err
	}
	classUID := catUID*1000 + c.UID
	b.datetime = contains(c.Profiles, datetimeProfile)

	attrs := b.withDatetime(c.Attributes)
	props, required, err := b.properties(name, attrs)
	if err != nil {
		return nil, err
	}

	if _, ok := attrs["metadata"]; !ok {
		return nil, fmt.Errorf("class %s has no metadata", name)
	}

	// The classification attributes the logging system computes.
	activity, ok := attrs["activity_id"]
	if !ok {
		return nil, fmt.Errorf("class %s has no activity_id", name)
	}
	activities, err := enumValues(activity, "integer")
	if err != nil {
		return nil, fmt.Errorf("activity_id: %w", err)
	}
	var typeUIDs []any
	var typeLabels []string
	labels := enumLabels(activity)
	for i, a := range activities {
		uid := classUID*100 + a.(int64)
		typeUIDs = append(typeUIDs, uid)
		typeLabels = append(typeLabels, fmt.Sprintf("%d %s: %s", uid, c.Caption, labels[i]))
	}
	if err := fix(props, "class_uid", map[string]any{"const": classUID},
		fmt.Sprintf("Value: %d %s.", classUID, c.Caption)); err != nil {
		return nil, err
	}
	if err := fix(props, "category_uid", map[string]any{"const": catUID},
		fmt.Sprintf("Value: %d %s.", catUID, b.categoryCaption(c.Category))); err != nil {
		return nil, err
	}
	if err := fix(props, "type_uid", map[string]any{"enum": typeUIDs},
		"Values: "+strings.Join(typeLabels, "; ")+"."); err != nil {
		return nil, err
	}

	doc := map[string]any{
		"$schema":              "https://json-schema.org/draft/2020-12/schema",
		"$id":                  fmt.Sprintf("%socsf-%s-%s.schema.json", BaseURI, b.src.version, name),
		"title":                fmt.Sprintf("OCSF %s %s (class_uid %d)", b.src.version, c.Caption, classUID),
		"description":          b.classDescription(c, classUID),
		"type":                 "object",
		"properties":           props,
		"additionalProperties": false,
	}
	if len(required) > 0 {
		doc["required"] = required
	}
	cons, err := constraints(name, c.Constraints, attrs)
	if err != nil {
		return nil, err
	}
	for k, v := range cons {
		doc[k] = v
	}
	if conds := b.profileRequirements(attrs); len(conds) > 0 {
		doc["allOf"] = conds
	}
	if err := b.objects(); err != nil {
		return nil, err
	}
	if err := b.observableTypes(); err != nil {
		return nil, err
	}
	doc["$defs"] = b.defs
	return doc, nil
}

func (b *builder) categoryCaption(name string) string {
	c := b.src.files["categories.json"]
	attrs, _ := c["attributes"].(map[string]any)
	cat, _ := attrs[name].(map[string]any)
	s, _ := cat["caption"].(string)
	return s
}

func (b *builder) classDescription(c *entity, classUID int64) string {
	var profiles []string
	for _, p := range c.Profiles {
		profiles = append(profiles, "`"+p+"`")
	}
	return fmt.Sprintf("%s\n\nGenerated from the schema files of OCSF %s (github.com/ocsf/ocsf-schema, tag v%s): the class %s (class_uid %d), resolved through %s, "+
		"every object it reaches as a definition of $defs, and the attributes of the profiles %s as optional properties "+
		"(the datetime profile adds NAME_dt beside each timestamp NAME). "+
		"An attribute a profile requires is required when metadata.profiles names the profile. "+
		"Constraints (at_least_one, just_one) are enforced. No attribute that OCSF does not declare is accepted, except inside unmapped and other attributes of type object or json_t.",
		c.Description, b.src.version, b.src.version, c.Name, classUID, strings.Join(c.Chain, " > "), strings.Join(profiles, ", "))
}

// fix replaces the enumeration of a classification attribute with the
// values the class allows.
func fix(props map[string]any, name string, with map[string]any, label string) error {
	p, ok := props[name].(map[string]any)
	if !ok {
		return fmt.Errorf("the class has no %s", name)
	}
	delete(p, "enum")
	delete(p, "const")
	for k, v := range with {
		p[k] = v
	}
	desc, _ := p["description"].(string)
	if i := strings.Index(desc, "\n\nValues: "); i >= 0 {
		desc = desc[:i]
	}
	p["description"] = strings.TrimSpace(desc + "\n\n" + label)
	return nil
}

// profileRequirements returns, for each profile of the class with required
// attributes, the condition that requires them when metadata.profiles
// names the profile.
func (b *builder) profileRequirements(attrs map[string]map[string]any) []any {
	byProfile := make(map[string][]any)
	for _, name := range sortedKeys(attrs) {
		def := attrs[name]
		if p := profileOf(def); p != "" && def["requirement"] == "required" {
			byProfile[p] = append(byProfile[p], name)
		}
	}
	var out []any
	for _, p := range sortedKeys(byProfile) {
		out = append(out, map[string]any{
			"if": map[string]any{
				"required": []any{"metadata"},
				"properties": map[string]any{
					"metadata": map[string]any{
						"required": []any{"profiles"},
						"properties": map[string]any{
							"profiles": map[string]any{"contains": map[string]any{"const": p}},
						},
					},
				},
			},
			"then": map[string]any{"required": byProfile[p]},
		})
	}
	return out
}

// observableTypes adds to the enum of observable.type_id, if the object
// is reached, the observable type ids that the files read declare. It
// runs once every object is built, when every file the class needs has
// been read.
func (b *builder) observableTypes() error {
	def, ok := b.defs["observable"].(map[string]any)
	if !ok {
		return nil
	}
	o, err := b.src.Object("observable")
	if err != nil {
		return err
	}
	attr, ok := o.Attributes["type_id"]
	if !ok {
		return errors.New("observable has no type_id")
	}
	ids, err := b.src.Observables()
	if err != nil {
		return err
	}
	enum := make(map[string]any, len(ids))
	for id, caption := range ids {
		enum[strconv.FormatInt(id, 10)] = map[string]any{"caption": caption}
	}
	s, err := b.attribute(merge(attr, map[string]any{"enum": enum}))
	if err != nil {
		return fmt.Errorf("observable.type_id: %w", err)
	}
	def["properties"].(map[string]any)["type_id"] = s
	return nil
}

// objects builds the definition of every object referred to, and of the
// objects those refer to, until none is left.
func (b *builder) objects() error {
	for {
		var todo []string
		for name, v := range b.defs {
			if v == nil {
				todo = append(todo, name)
			}
		}
		if len(todo) == 0 {
			return nil
		}
		sort.Strings(todo)
		for _, name := range todo {
			def, err := b.object(name)
			if err != nil {
				return err
			}
			b.defs[name] = def
		}
	}
}

func (b *builder) object(name string) (map[string]any, error) {
	o, err := b.src.Object(name)
	if err != nil {
		return nil, err
	}
	attrs := b.withDatetime(o.Attributes)
	props, required, err := b.properties(name, attrs)
	if err != nil {
		return nil, err
	}
	def := map[string]any{
		"title":                o.Caption,
		"description":          o.Description,
		"type":                 "object",
		"properties":           props,
		"additionalProperties": false,
	}
	if o.Deprecated != nil {
		def["deprecated"] = true
		def["description"] = withDeprecation(o.Description, o.Deprecated)
	}
	if len(required) > 0 {
		def["required"] = required
	}
	cons, err := constraints(name, o.Constraints, attrs)
	if err != nil {
		return nil, err
	}
	for k, v := range cons {
		def[k] = v
	}
	return def, nil
}

// withDatetime adds, when the datetime profile applies, NAME_dt beside
// each timestamp_t attribute NAME that has no such sibling yet.
func (b *builder) withDatetime(attrs map[string]map[string]any) map[string]map[string]any {
	if !b.datetime {
		return attrs
	}
	out := make(map[string]map[string]any, len(attrs))
	for k, v := range attrs {
		out[k] = v
	}
	for _, name := range sortedKeys(attrs) {
		def := attrs[name]
		if def["type"] != "timestamp_t" {
			continue
		}
		dt := name + "_dt"
		if _, ok := out[dt]; ok {
			continue
		}
		caption, _ := def["caption"].(string)
		d := map[string]any{
			"caption":     caption,
			"description": fmt.Sprintf("The %s attribute (%s) as an RFC 3339 date and time.", name, caption),
			"type":        "datetime_t",
			"requirement": "optional",
			"profile":     datetimeProfile,
		}
		if v, ok := def["is_array"]; ok {
			d["is_array"] = v
		}
		if v, ok := def["@deprecated"]; ok {
			d["@deprecated"] = v
		}
		out[dt] = d
	}
	return out
}

// properties maps the attributes of a class or an object. required lists
// the attributes whose requirement is "required" and that no profile
// brings.
func (b *builder) properties(owner string, attrs map[string]map[string]any) (map[string]any, []any, error) {
	props := make(map[string]any, len(attrs))
	var required []any
	for _, name := range sortedKeys(attrs) {
		def := attrs[name]
		s, err := b.attribute(def)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.%s: %w", owner, name, err)
		}
		props[name] = s
		switch r := def["requirement"]; r {
		case "required":
			if profileOf(def) == "" {
				required = append(required, name)
			}
		case "recommended", "optional", nil:
		default:
			return nil, nil, fmt.Errorf("%s.%s: requirement %v", owner, name, r)
		}
	}
	return props, required, nil
}

// profileOf returns the profile an attribute belongs to, "" if none.
func profileOf(def map[string]any) string {
	p, _ := def["profile"].(string)
	return p
}

// attribute maps one attribute definition (dictionary entry merged with
// the class's or object's definition).
func (b *builder) attribute(def map[string]any) (map[string]any, error) {
	typ, _ := def["type"].(string)
	if typ == "" {
		return nil, errors.New("no type")
	}
	item, base, err := b.typeSchema(typ)
	if err != nil {
		return nil, err
	}
	desc, _ := def["description"].(string)
	if e, ok := def["enum"]; ok && e != nil {
		vals, err := enumValues(def, base)
		if err != nil {
			return nil, err
		}
		item = merge(item, map[string]any{"enum": vals})
		var labels []string
		for i, l := range enumLabels(def) {
			labels = append(labels, fmt.Sprintf("%v %s", vals[i], l))
		}
		desc = strings.TrimSpace(desc + "\n\nValues: " + strings.Join(labels, "; ") + ".")
	}
	var s map[string]any
	switch arr, _ := def["is_array"].(bool); {
	case arr:
		s = map[string]any{"type": "array", "items": item}
	default:
		s = merge(item, nil)
	}
	if c, ok := def["caption"].(string); ok {
		s["title"] = c
	}
	if d, ok := def["@deprecated"].(map[string]any); ok {
		s["deprecated"] = true
		desc = withDeprecation(desc, d)
	}
	if desc != "" {
		s["description"] = desc
	}
	return s, nil
}

func withDeprecation(desc string, d map[string]any) string {
	msg, _ := d["message"].(string)
	since, _ := d["since"].(string)
	return strings.TrimSpace(fmt.Sprintf("%s\n\nDeprecated since %s: %s", desc, since, msg))
}

// typeSchema returns the schema of a value of the named type and the JSON
// type of its primitive base ("" for json_t and objects). A primitive type
// is mapped in place, any other data type refers to its definition in
// $defs, an object to the object's definition.
func (b *builder) typeSchema(typ string) (map[string]any, string, error) {
	if typ == genericObject {
		return map[string]any{"type": "object"}, "object", nil
	}
	if _, ok := b.src.types[typ]; ok {
		def, base, err := b.dataType(typ, nil)
		if err != nil {
			return nil, "", err
		}
		if _, ok := primitives[typ]; ok {
			delete(def, "title")
			delete(def, "description")
			return def, base, nil
		}
		b.defs[typ] = def
		return map[string]any{"$ref": "#/$defs/" + typ}, base, nil
	}
	// Data types end in _t, objects do not: their names cannot collide
	// in $defs.
	if strings.HasSuffix(typ, "_t") {
		return nil, "", fmt.Errorf("unknown data type %s", typ)
	}
	if _, ok := b.defs[typ]; !ok {
		b.defs[typ] = nil // built by objects
	}
	return map[string]any{"$ref": "#/$defs/" + typ}, "object", nil
}

// dataType maps a data type of the dictionary: the schema of its base type
// with the constraints the dictionary gives (regex, max_len, range, values)
// added, and the JSON type of the primitive it derives from.
func (b *builder) dataType(name string, stack []string) (map[string]any, string, error) {
	t, ok := b.src.types[name].(map[string]any)
	if !ok {
		return nil, "", fmt.Errorf("unknown data type %s", name)
	}
	for _, n := range stack {
		if n == name {
			return nil, "", fmt.Errorf("data type cycle through %s", name)
		}
	}
	var s map[string]any
	var base string
	if jt, ok := primitives[name]; ok {
		s = map[string]any{}
		if jt != "" {
			s["type"] = jt
		}
		base = jt
	} else {
		parent, _ := t["type"].(string)
		if parent == "" {
			return nil, "", fmt.Errorf("data type %s has no base type", name)
		}
		var err error
		if s, base, err = b.dataType(parent, append(stack, name)); err != nil {
			return nil, "", err
		}
	}
	if c, ok := t["caption"].(string); ok {
		s["title"] = c
	}
	if d, ok := t["description"].(string); ok {
		s["description"] = d
	}
	if re, ok := t["regex"].(string); ok {
		if base != "string" {
			return nil, "", fmt.Errorf("data type %s: regex on a %s", name, base)
		}
		if _, err := regexp.Compile(re); err != nil {
			return nil, "", fmt.Errorf("data type %s: %w", name, err)
		}
		s["pattern"] = re
	}
	if v, ok := t["max_len"]; ok {
		n, err := integer(v)
		if err != nil || base != "string" {
			return nil, "", fmt.Errorf("data type %s: max_len %v", name, v)
		}
		s["maxLength"] = n
	}
	if v, ok := t["range"]; ok {
		r, ok := v.([]any)
		if !ok || len(r) != 2 || (base != "integer" && base != "number") {
			return nil, "", fmt.Errorf("data type %s: range %v", name, v)
		}
		s["minimum"], s["maximum"] = r[0], r[1]
	}
	if v, ok := t["values"]; ok && base != "boolean" {
		vals, ok := v.([]any)
		if !ok {
			return nil, "", fmt.Errorf("data type %s: values %v", name, v)
		}
		s["enum"] = vals
	}
	if name == "datetime_t" {
		s["format"] = "date-time"
	}
	if d, ok := t["@deprecated"].(map[string]any); ok {
		s["deprecated"] = true
		desc, _ := s["description"].(string)
		s["description"] = withDeprecation(desc, d)
	}
	return s, base, nil
}

// enumValues returns the values of an attribute's enum, in the type of the
// attribute: integers in numeric order, strings in lexical order.
func enumValues(def map[string]any, base string) ([]any, error) {
	e, ok := def["enum"].(map[string]any)
	if !ok || len(e) == 0 {
		return nil, errors.New("no enum")
	}
	var out []any
	switch base {
	case "integer":
		var ns []int64
		for k := range e {
			n, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("enum key %q is not an integer", k)
			}
			ns = append(ns, n)
		}
		sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
		for _, n := range ns {
			out = append(out, n)
		}
	case "string":
		for _, k := range sortedKeys(e) {
			out = append(out, k)
		}
	default:
		return nil, fmt.Errorf("enum on a value of type %q", base)
	}
	return out, nil
}

// enumLabels returns the captions of an attribute's enum values, in the
// order of enumValues, each deprecated one marked so.
func enumLabels(def map[string]any) []string {
	e, _ := def["enum"].(map[string]any)
	keys := sortedKeys(e)
	numeric := true
	for _, k := range keys {
		if _, err := strconv.ParseInt(k, 10, 64); err != nil {
			numeric = false
		}
	}
	if numeric {
		sort.Slice(keys, func(i, j int) bool {
			a, _ := strconv.ParseInt(keys[i], 10, 64)
			c, _ := strconv.ParseInt(keys[j], 10, 64)
			return a < c
		})
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		v, _ := e[k].(map[string]any)
		out[i], _ = v["caption"].(string)
		if _, ok := v["@deprecated"]; ok {
			out[i] += " (deprecated)"
		}
	}
	return out
}

// constraints maps OCSF's constraints: at_least_one to anyOf, just_one to
// oneOf, each of one "required" per attribute.
func constraints(owner string, c map[string]any, attrs map[string]map[string]any) (map[string]any, error) {
	out := make(map[string]any)
	for _, kind := range sortedKeys(c) {
		var keyword string
		switch kind {
		case "at_least_one":
			keyword = "anyOf"
		case "just_one":
			keyword = "oneOf"
		default:
			return nil, fmt.Errorf("%s: unknown constraint %s", owner, kind)
		}
		list, ok := c[kind].([]any)
		if !ok {
			return nil, fmt.Errorf("%s: constraint %s is not a list", owner, kind)
		}
		var alts []any
		for _, a := range list {
			name, _ := a.(string)
			if _, ok := attrs[name]; !ok {
				return nil, fmt.Errorf("%s: constraint %s names %v, which is not an attribute", owner, kind, a)
			}
			alts = append(alts, map[string]any{"required": []any{name}})
		}
		if len(alts) > 0 {
			out[keyword] = alts
		}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
