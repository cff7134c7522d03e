package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
)

// keywordOrder is the order in which the members of a schema object are
// written; members not listed follow, in lexical order. The members of
// "properties" and "$defs" are names, written in lexical order.
var keywordOrder = []string{
	"$schema", "$id", "$ref", "title", "description", "deprecated",
	"type", "const", "enum", "format", "pattern", "minimum", "maximum", "maxLength",
	"items", "contains", "properties", "required", "additionalProperties",
	"anyOf", "oneOf", "allOf", "if", "then", "$defs",
}

var keywordRank = func() map[string]int {
	m := make(map[string]int, len(keywordOrder))
	for i, k := range keywordOrder {
		m[k] = i
	}
	return m
}()

// encode writes v as indented JSON with a stable order of members and a
// final newline. Strings are written without HTML escaping.
func encode(v any) []byte {
	var buf bytes.Buffer
	writeValue(&buf, v, "", false)
	buf.WriteByte('\n')
	return buf.Bytes()
}

func writeValue(buf *bytes.Buffer, v any, indent string, names bool) {
	switch v := v.(type) {
	case nil:
		buf.WriteString("null")
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case string:
		writeString(buf, v)
	case int64:
		buf.WriteString(strconv.FormatInt(v, 10))
	case int:
		buf.WriteString(strconv.Itoa(v))
	case json.Number:
		buf.WriteString(v.String())
	case []any:
		if len(v) == 0 {
			buf.WriteString("[]")
			return
		}
		if scalars(v) {
			buf.WriteByte('[')
			for i, x := range v {
				if i > 0 {
					buf.WriteString(", ")
				}
				writeValue(buf, x, indent, false)
			}
			buf.WriteByte(']')
			return
		}
		buf.WriteString("[\n")
		for i, x := range v {
			buf.WriteString(indent + "  ")
			writeValue(buf, x, indent+"  ", false)
			if i < len(v)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + "]")
	case map[string]any:
		if len(v) == 0 {
			buf.WriteString("{}")
			return
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if !names {
				ri, iok := keywordRank[keys[i]]
				rj, jok := keywordRank[keys[j]]
				switch {
				case iok && jok:
					return ri < rj
				case iok != jok:
					return iok
				}
			}
			return keys[i] < keys[j]
		})
		buf.WriteString("{\n")
		for i, k := range keys {
			buf.WriteString(indent + "  ")
			writeString(buf, k)
			buf.WriteString(": ")
			writeValue(buf, v[k], indent+"  ", !names && (k == "properties" || k == "$defs"))
			if i < len(keys)-1 {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + "}")
	default:
		panic(fmt.Sprintf("encode: unexpected %T", v))
	}
}

func scalars(v []any) bool {
	for _, x := range v {
		switch x.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}

func writeString(buf *bytes.Buffer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	buf.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
}
