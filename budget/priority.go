package budget

import (
	"context"
	"strconv"
	"strings"
)

// Priority orders the callers that wait for a call: a higher one is served
// first, and callers of one priority are served in the order they arrived.
// It travels in the context (WithPriority), so that the layers between the
// pipeline and the budget (the cache, the breaker, the Defender client)
// carry it without a parameter of their own.
//
// The zero Priority is PriorityInformational, what a context without a
// priority gets.
type Priority int8

// The priorities, from lowest to highest.
const (
	// PriorityDeferred is a lookup nobody is held up by (an alert published
	// unavailable earlier, enriched again later): it goes only when no other
	// caller waits.
	PriorityDeferred Priority = iota - 1
	// PriorityInformational is an Informational alert, one of an unknown
	// severity, or a caller that named no priority.
	PriorityInformational
	// PriorityLow is a Low alert.
	PriorityLow
	// PriorityMedium is a Medium alert: it may spend the reserve.
	PriorityMedium
	// PriorityHigh is a High alert: it may spend the reserve.
	PriorityHigh
)

// numPriorities is the number of priorities, PriorityDeferred to PriorityHigh.
const numPriorities = int(PriorityHigh-PriorityDeferred) + 1

// priorities lists every priority from the lowest.
var priorities = [numPriorities]Priority{PriorityDeferred, PriorityInformational, PriorityLow, PriorityMedium, PriorityHigh}

func (p Priority) valid() bool { return p >= PriorityDeferred && p <= PriorityHigh }

// index is p's place in an array of numPriorities, 0 for PriorityDeferred.
func (p Priority) index() int { return int(p - PriorityDeferred) }

// mayUseReserve reports whether p may take the calls of a window's reserve.
func (p Priority) mayUseReserve() bool { return p >= PriorityMedium }

// String returns "high", "medium", "low", "informational" or "deferred":
// the priority label of the budget's metrics.
func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "high"
	case PriorityMedium:
		return "medium"
	case PriorityLow:
		return "low"
	case PriorityInformational:
		return "informational"
	case PriorityDeferred:
		return "deferred"
	}
	return "Priority(" + strconv.Itoa(int(p)) + ")"
}

type priorityKey struct{}

// WithPriority returns a copy of ctx that carries p to Window.Acquire.
func WithPriority(ctx context.Context, p Priority) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityFrom returns the priority ctx carries: PriorityInformational if it
// carries none, or a value that is none of the five.
func PriorityFrom(ctx context.Context) Priority {
	if p, ok := ctx.Value(priorityKey{}).(Priority); ok && p.valid() {
		return p
	}
	return PriorityInformational
}

// SeverityPriority returns the priority of an alert of the given severity,
// as Defender writes it (the alert object's severity, a streaming record's
// properties.Severity): "High", "Medium", "Low" or "Informational", in any
// case, surrounding spaces ignored. Anything else, the empty string and
// Defender's "UnSpecified" included, is PriorityInformational.
func SeverityPriority(severity string) Priority {
	s := strings.TrimSpace(severity)
	switch {
	case strings.EqualFold(s, "high"):
		return PriorityHigh
	case strings.EqualFold(s, "medium"):
		return PriorityMedium
	case strings.EqualFold(s, "low"):
		return PriorityLow
	}
	return PriorityInformational
}
