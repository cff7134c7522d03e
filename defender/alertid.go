package defender

// MaxAlertIDLength is the longest alert id the connector accepts.
const MaxAlertIDLength = 128

// ValidAlertID reports whether id is 1 to 128 characters of A-Z, a-z,
// 0-9, '_' and '-', the only shape of alert id the connector lets near a
// URL. Real ids look like "da637472900382838869_1364969609",
// "da637308392288907382_-880718168" and "636688558380765161_2136280442".
func ValidAlertID(id string) bool {
	if len(id) == 0 || len(id) > MaxAlertIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
