package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// source reads the files of an OCSF schema folder (the layout of the
// ocsf-schema repository: dictionary.json, categories.json, version.json,
// events/, objects/, profiles/) and remembers every file it has read.
type source struct {
	fsys  fs.FS
	files map[string]map[string]any

	dictionary map[string]any // dictionary.json "attributes"
	types      map[string]any // dictionary.json "types" "attributes"
	version    string

	raw   map[string]*entity // by kind and name: the chain, before the dictionary
	final map[string]*entity // by kind and name: with the dictionary
}

// entity is a class or an object with its extends chain and its $include
// directives resolved. Attributes holds, per attribute name, the merged
// definition: the dictionary entry, then each definition of the chain from
// the root down, each later one merged over the earlier ones.
type entity struct {
	Name        string
	Chain       []string // the names of the extends chain, root first, Name last
	Caption     string
	Description string
	Deprecated  map[string]any // the file's own @deprecated, or nil
	Attributes  map[string]map[string]any
	Constraints map[string]any
	Profiles    []string // sorted, without duplicates
	UID         int64    // classes: the uid within the category, -1 if none
	Category    string   // classes: the category name
}

func newSource(fsys fs.FS) (*source, error) {
	s := &source{
		fsys:  fsys,
		files: make(map[string]map[string]any),
		raw:   make(map[string]*entity),
		final: make(map[string]*entity),
	}
	dict, err := s.read("dictionary.json")
	if err != nil {
		return nil, err
	}
	var ok bool
	if s.dictionary, ok = dict["attributes"].(map[string]any); !ok {
		return nil, errors.New("dictionary.json: no attributes")
	}
	types, _ := dict["types"].(map[string]any)
	if s.types, ok = types["attributes"].(map[string]any); !ok {
		return nil, errors.New("dictionary.json: no types")
	}
	v, err := s.read("version.json")
	if err != nil {
		return nil, err
	}
	if s.version, ok = v["version"].(string); !ok || s.version == "" {
		return nil, errors.New("version.json: no version")
	}
	return s, nil
}

// read parses one JSON file of the folder, once.
func (s *source) read(name string) (map[string]any, error) {
	if m, ok := s.files[name]; ok {
		return m, nil
	}
	b, err := fs.ReadFile(s.fsys, name)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%s: data after the JSON object", name)
	}
	s.files[name] = m
	return m, nil
}

// Files returns the names of the files read so far, sorted.
func (s *source) Files() []string {
	names := make([]string, 0, len(s.files))
	for n := range s.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// category returns the uid of the named category in categories.json.
func (s *source) category(name string) (int64, error) {
	c, err := s.read("categories.json")
	if err != nil {
		return 0, err
	}
	attrs, _ := c["attributes"].(map[string]any)
	cat, ok := attrs[name].(map[string]any)
	if !ok {
		return 0, fmt.Errorf("categories.json: no category %q", name)
	}
	return integer(cat["uid"])
}

// classPath finds the file of a class: events/**/<name>.json. Only names
// of directory entries are listed; no other file is opened.
func (s *source) classPath(name string) (string, error) {
	var found []string
	err := fs.WalkDir(s.fsys, "events", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == name+".json" {
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no class %q under events/", name)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("class %q is defined by %s", name, strings.Join(found, " and "))
}

// Class resolves an event class.
func (s *source) Class(name string) (*entity, error) {
	return s.resolve(name, true)
}

// Object resolves an object.
func (s *source) Object(name string) (*entity, error) {
	return s.resolve(name, false)
}

// resolve returns the entity with its chain resolved and the dictionary
// entry of each attribute put under its definition.
func (s *source) resolve(name string, class bool) (*entity, error) {
	key := kindKey(name, class)
	if e, ok := s.final[key]; ok {
		return e, nil
	}
	raw, err := s.chain(name, class, nil)
	if err != nil {
		return nil, err
	}
	e := *raw
	e.Attributes = make(map[string]map[string]any, len(raw.Attributes))
	for attr, def := range raw.Attributes {
		d, ok := s.dictionary[attr].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: attribute %s is not in the dictionary", name, attr)
		}
		e.Attributes[attr] = merge(d, def)
	}
	s.final[key] = &e
	return &e, nil
}

func kindKey(name string, class bool) string {
	if class {
		return "class:" + name
	}
	return "object:" + name
}

// chain resolves the extends chain and the $include directives of an
// entity, without the dictionary.
func (s *source) chain(name string, class bool, stack []string) (*entity, error) {
	key := kindKey(name, class)
	if e, ok := s.raw[key]; ok {
		return e, nil
	}
	for _, n := range stack {
		if n == name {
			return nil, fmt.Errorf("extends cycle: %s -> %s", strings.Join(stack, " -> "), name)
		}
	}
	stack = append(stack, name)

	var file string
	if class {
		p, err := s.classPath(name)
		if err != nil {
			return nil, err
		}
		file = p
	} else {
		file = path.Join("objects", name+".json")
	}
	m, err := s.read(file)
	if err != nil {
		return nil, err
	}
	if n, _ := m["name"].(string); n != name {
		return nil, fmt.Errorf("%s: name is %q, want %q", file, n, name)
	}

	e := &entity{Name: name, Attributes: make(map[string]map[string]any), UID: -1}
	profiles := make(map[string]bool)
	if ext, ok := m["extends"].(string); ok && ext != "" {
		base, err := s.chain(ext, class, stack)
		if err != nil {
			return nil, err
		}
		e.Caption, e.Description, e.Category = base.Caption, base.Description, base.Category
		e.Constraints = base.Constraints
		e.Chain = append(e.Chain, base.Chain...)
		for k, v := range base.Attributes {
			e.Attributes[k] = v
		}
		for _, p := range base.Profiles {
			profiles[p] = true
		}
	}
	e.Chain = append(e.Chain, name)
	if v, ok := m["caption"].(string); ok {
		e.Caption = v
	}
	if v, ok := m["description"].(string); ok {
		e.Description = v
	}
	if v, ok := m["category"].(string); ok {
		e.Category = v
	}
	if v, ok := m["@deprecated"].(map[string]any); ok {
		e.Deprecated = v
	}
	if v, ok := m["uid"]; ok {
		if e.UID, err = integer(v); err != nil {
			return nil, fmt.Errorf("%s: uid: %w", file, err)
		}
	}
	if v, ok := m["constraints"]; ok {
		c, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: constraints is not an object", file)
		}
		e.Constraints = c
	}
	if list, ok := m["profiles"].([]any); ok {
		for _, p := range list {
			ps, ok := p.(string)
			if !ok {
				return nil, fmt.Errorf("%s: profiles holds %v", file, p)
			}
			profiles[ps] = true
		}
	}

	attrs, _ := m["attributes"].(map[string]any)
	own, included, err := s.attributes(file, attrs, nil)
	if err != nil {
		return nil, err
	}
	for _, p := range included {
		profiles[p] = true
	}
	for k, v := range own {
		e.Attributes[k] = merge(e.Attributes[k], v)
	}
	for p := range profiles {
		e.Profiles = append(e.Profiles, p)
	}
	sort.Strings(e.Profiles)

	s.raw[key] = e
	return e, nil
}

// attributes returns the attributes of one "attributes" member: those of
// the files its $include names (profiles, each attribute marked with the
// profile's name unless it says otherwise), then its own, merged over them.
// It also returns the names of the profiles included.
func (s *source) attributes(file string, attrs map[string]any, seen []string) (map[string]map[string]any, []string, error) {
	out := make(map[string]map[string]any)
	var profiles []string
	if inc, ok := attrs["$include"]; ok {
		list, ok := inc.([]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s: $include is not an array", file)
		}
		for _, item := range list {
			p, ok := item.(string)
			if !ok {
				return nil, nil, fmt.Errorf("%s: $include holds %v", file, item)
			}
			p = path.Clean(p)
			for _, x := range seen {
				if x == p {
					return nil, nil, fmt.Errorf("%s: $include cycle through %s", file, p)
				}
			}
			m, err := s.read(p)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: $include: %w", file, err)
			}
			pname, _ := m["name"].(string)
			if meta, _ := m["meta"].(string); meta != "profile" || pname == "" {
				return nil, nil, fmt.Errorf("%s: $include of %s, which is not a profile", file, p)
			}
			if _, ok := m["extends"]; ok {
				return nil, nil, fmt.Errorf("%s: extends in a profile is not supported", p)
			}
			profiles = append(profiles, pname)
			pattrs, _ := m["attributes"].(map[string]any)
			sub, subProfiles, err := s.attributes(p, pattrs, append(seen, p))
			if err != nil {
				return nil, nil, err
			}
			profiles = append(profiles, subProfiles...)
			for k, v := range sub {
				if _, ok := v["profile"]; !ok {
					v = merge(v, map[string]any{"profile": pname})
				}
				out[k] = merge(out[k], v)
			}
		}
	}
	for k, v := range attrs {
		if k == "$include" {
			continue
		}
		def, ok := v.(map[string]any)
		if !ok {
			return nil, nil, fmt.Errorf("%s: attribute %s is not an object", file, k)
		}
		out[k] = merge(out[k], def)
	}
	return out, profiles, nil
}

// merge returns a deep copy of base with over merged into it: objects are
// merged member by member, any other value of over replaces that of base
// (null included). Neither argument is modified.
func merge(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = clone(v)
	}
	for k, v := range over {
		if bm, ok := out[k].(map[string]any); ok {
			if om, ok := v.(map[string]any); ok {
				out[k] = merge(bm, om)
				continue
			}
		}
		out[k] = clone(v)
	}
	return out
}

func clone(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return merge(nil, v)
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = clone(x)
		}
		return out
	}
	return v
}

// integer reads a JSON integer.
func integer(v any) (int64, error) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("%v is not a number", v)
	}
	return n.Int64()
}

// Observables returns the observable type ids declared in the files read
// so far, with a caption for each: by the dictionary's data types and
// attributes, by objects, by the attributes of classes, objects and
// profiles, and by the "observables" paths of classes. OCSF fills the
// enum of observable.type_id with them.
func (s *source) Observables() (map[int64]string, error) {
	out := make(map[int64]string)
	add := func(where string, v any, caption string) error {
		id, err := integer(v)
		if err != nil {
			return fmt.Errorf("%s: observable: %w", where, err)
		}
		if old, ok := out[id]; ok && old != caption {
			return fmt.Errorf("%s: observable %d is both %q and %q", where, id, old, caption)
		}
		out[id] = caption
		return nil
	}
	for _, name := range sortedKeys(s.types) {
		t, _ := s.types[name].(map[string]any)
		if v, ok := t["observable"]; ok {
			caption, _ := t["caption"].(string)
			if err := add("dictionary.json: type "+name, v, caption); err != nil {
				return nil, err
			}
		}
	}
	for _, name := range sortedKeys(s.dictionary) {
		a, _ := s.dictionary[name].(map[string]any)
		if v, ok := a["observable"]; ok {
			caption, _ := a["caption"].(string)
			if err := add("dictionary.json: "+name, v, caption); err != nil {
				return nil, err
			}
		}
	}
	for _, file := range s.Files() {
		if !strings.HasPrefix(file, "objects/") && !strings.HasPrefix(file, "events/") && !strings.HasPrefix(file, "profiles/") {
			continue
		}
		m := s.files[file]
		caption, _ := m["caption"].(string)
		if v, ok := m["observable"]; ok {
			if err := add(file, v, caption); err != nil {
				return nil, err
			}
		}
		attrs, _ := m["attributes"].(map[string]any)
		for _, name := range sortedKeys(attrs) {
			a, _ := attrs[name].(map[string]any)
			if v, ok := a["observable"]; ok {
				if err := add(file+": "+name, v, caption+": "+name); err != nil {
					return nil, err
				}
			}
		}
		paths, _ := m["observables"].(map[string]any)
		for _, p := range sortedKeys(paths) {
			if err := add(file+": observables", paths[p], caption+": "+p); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
