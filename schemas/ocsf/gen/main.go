// Command gen writes the JSON Schema (draft 2020-12) of one OCSF event
// class, built from the schema files of an OCSF release:
//
//	go run ./schemas/ocsf/gen -schema schemas/ocsf/1.8.0 -class detection_finding \
//		-out schemas/ocsf-1.8.0-detection_finding.schema.json
//
// The schema folder has the layout of the ocsf-schema repository
// (dictionary.json, categories.json, version.json, events/, objects/,
// profiles/). With -files, gen prints instead the files of the folder the
// class needs, one a line: the subset to keep when the folder is copied.
//
// How OCSF's constructs are mapped is described in the documentation of
// package ocsf (schemas/ocsf/doc.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("gen", flag.ContinueOnError)
	schema := fl.String("schema", "", "the OCSF schema folder")
	class := fl.String("class", "", "the name of the event class, e.g. detection_finding")
	out := fl.String("out", "", "the file to write (standard output if empty)")
	files := fl.Bool("files", false, "print the files of the schema folder the class needs instead of the schema")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *schema == "" || *class == "" || fl.NArg() > 0 {
		return errors.New("usage: gen -schema DIR -class NAME [-out FILE] [-files]")
	}
	res, err := Generate(os.DirFS(*schema), *class)
	if err != nil {
		return err
	}
	data := res.Schema
	if *files {
		data = []byte(strings.Join(res.Files, "\n") + "\n")
	}
	if *out == "" {
		_, err := os.Stdout.Write(data)
		return err
	}
	return os.WriteFile(*out, data, 0o644)
}
