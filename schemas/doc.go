// Package schemas is the connector's outside contract in code: it splits
// Kafka message values into alert events, reads what an alert says of
// itself (ReadHints: its severity and the user it names), encodes the v1
// output envelope and the dead-letter headers, names the dead-letter
// reasons, and embeds the JSON Schemas (draft 2020-12) that describe the
// input forms and the output.
//
// Input. A message value is one of:
//
//  1. a Defender for Endpoint alert object as the alerts API returns it,
//     with the alert id at "/id" (the default pointer);
//  2. a Defender XDR streaming-API envelope: a top-level object whose
//     "records" member is an array; each record is one event, with the
//     alert id at "/properties/AlertId";
//  3. any JSON object, with the alert id at a configured RFC 6901 pointer.
//
// An object with a value other than null at the pointer is an alert (form
// 1 or 3), whatever else it carries; an object with nothing there whose
// "records" member is an array is an envelope. An envelope with no records
// or with more than the record limit is one dead letter.
//
// The package reads JSON with its own small scanner over the original
// bytes: alerts and records are handed on as subslices of the message,
// every field kept, numbers never reformatted. It leaves out everything
// with side effects: no Kafka connections, no HTTP, no logging. It does not strip OData
// annotations from the user object; the code that fetches the user does.
package schemas
