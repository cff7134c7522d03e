package config

import "log/slog"

// LogValue writes every option under its variable's name, as the connector
// runs with it: secrets (the SASL password, the Redis URL) as
// "[redacted]" when set and "" when not, and URLs without user info.
func (c Config) LogValue() slog.Value {
	opts := c.options()
	attrs := make([]slog.Attr, 0, len(opts))
	for _, o := range opts {
		var v string
		switch sv := o.value.(type) {
		case secretValue:
			v = sv.p.shown()
		default:
			v = RedactUserinfo(o.value.String())
		}
		attrs = append(attrs, slog.String(Env(o.name), v))
	}
	return slog.GroupValue(attrs...)
}
