// Package ocsf holds what the JSON Schema of the connector's OCSF output is
// made from: a copy of the OCSF 1.8.0 schema files that the OCSF Detection
// Finding class (class_uid 2004) needs, and gen, the command that builds
// ../ocsf-1.8.0-detection_finding.schema.json from them. The package has no
// code of its own; its tests validate documents against the schema.
//
// # The copied files
//
// 1.8.0/ is a subset of the schema folder of OCSF's 1.8.0 release
// (github.com/ocsf/ocsf-schema, tag v1.8.0), in the same layout: the
// files gen reads for detection_finding (dictionary.json, categories.json,
// version.json, events/base_event.json, events/findings/finding.json,
// events/findings/detection_finding.json, and the objects/ and profiles/
// files the class reaches), unchanged, beside the release's LICENSE
// (Apache License 2.0) and NOTICE. gen -files prints that list; a test
// checks that the folder holds exactly it. To move to another release,
// copy the files it prints from the release's folder and regenerate.
//
// # How OCSF is mapped
//
// The output is JSON Schema draft 2020-12, with one definition in $defs per
// object reached and per derived data type, referred to by $ref, so that
// recursive objects (process.parent_process) end.
//
//   - A class or object is the merge of its extends chain, from the root
//     down (base_event, finding, detection_finding; object, _entity,
//     _resource, ...): a later definition of an attribute is merged over
//     the earlier ones member by member, enum values included. An
//     attribute's dictionary entry lies under all of them. caption,
//     description and category are inherited unless redefined;
//     constraints are replaced by the child's, if it has any.
//   - $include in "attributes" adds the attributes of the named profile
//     files before the file's own ones, which are merged over them. Each
//     such attribute belongs to the profile, unless a definition sets
//     "profile" to null; attributes marked with "profile" in an object
//     belong to that profile too.
//   - Every class and object is "type": "object" with
//     "additionalProperties": false. "required" lists the attributes of
//     requirement "required" that belong to no profile; "recommended" and
//     "optional" ones are optional. At the top level, an attribute a
//     profile requires (cloud.cloud, osint.osint) is required when
//     metadata.profiles contains the profile's name; inside objects,
//     attributes of profiles are optional.
//   - The datetime profile adds NAME_dt, of type datetime_t and optional,
//     beside every timestamp_t attribute NAME of the class and of every
//     object, as the OCSF server does: the profile's file itself declares
//     no attributes.
//   - Data types follow their dictionary "type" down to a base type:
//     string_t to string, integer_t and long_t to integer, float_t to
//     number, boolean_t to boolean, json_t to any value. regex becomes
//     pattern, max_len maxLength, range minimum and maximum. So
//     timestamp_t (milliseconds since the epoch) is an integer, port_t an
//     integer from 0 to 65535, ip_t, mac_t, email_t and uuid_t strings with
//     OCSF's patterns; datetime_t is a string with OCSF's pattern and
//     "format": "date-time".
//   - An attribute whose type is an object refers to the object's
//     definition; OCSF's generic object (type "object", as unmapped) is
//     any JSON object.
//   - is_array makes an array of the attribute's type.
//   - enum lists exactly the keys the merged definition has, as integers
//     for integer attributes (the *_id ones; 0 Unknown and 99 Other come
//     from the dictionary where it lists them) and as strings for string
//     attributes. The captions are appended to the description.
//   - class_uid is the constant category uid * 1000 + class uid (2004),
//     category_uid the category's uid (2), and type_uid one of class_uid *
//     100 + each activity_id value (200400, 200401, 200402, 200403,
//     200499).
//   - Constraints: at_least_one becomes anyOf, just_one oneOf, of one
//     "required" per attribute named.
//   - caption becomes title, description description (OCSF's text, HTML
//     included); @deprecated becomes "deprecated": true with its message
//     appended to the description. Deprecated attributes are accepted.
//   - observable: the enum of observable.type_id, which the object's file
//     limits to 0 and 99, receives every observable type id the files
//     read declare, as the OCSF server fills it: those of the
//     dictionary's data types and attributes, of objects, of attributes
//     of classes, objects and profiles, and of a class's "observables"
//     paths. For 1.8.0 these are all the ids of the core schema.
//   - sibling, group and references are left out: they do not constrain
//     a document.
//
// metadata.version is a plain string, which "1.8.0" matches.
//
//go:generate go run ./gen -schema 1.8.0 -class detection_finding -out ../ocsf-1.8.0-detection_finding.schema.json
package ocsf
