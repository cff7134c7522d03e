package consumer_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/defender-enricher/defender-enricher/consumer"
)

// publish stands for the producer: it calls ack once the output topic has
// acknowledged the event.
func publish(event []byte, ack func()) { ack() }

// split stands for the parser: one input message may carry several events.
func split(value []byte) [][]byte { return [][]byte{value} }

// The shape of a pipeline on a Consumer: one fetch loop, an acknowledgement
// per published event, the commit loop beside it, and Close after draining.
func Example() {
	c, err := consumer.New(consumer.Config{
		Brokers: []string{"127.0.0.1:9092"},
		Topic:   "defender.alerts",
		Group:   "defender-enricher",
		Logger:  slog.Default(),
	})
	if err != nil {
		slog.Error("consumer", "error", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { _ = c.Run(ctx) }()

	for {
		m, err := c.Fetch(ctx)
		if errors.Is(err, context.Canceled) || errors.Is(err, consumer.ErrClosed) {
			break
		}
		if err != nil {
			slog.Warn("fetch", "error", err)
			continue
		}
		events := split(m.Value)
		m.Expect(len(events)) // zero events: done at once
		for _, ev := range events {
			publish(ev, m.Done)
		}
	}

	// Drain in-flight work here, then commit what is done and leave the group.
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Close(shutdown); err != nil {
		slog.Error("close", "error", err)
	}
}
