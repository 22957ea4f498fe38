package server

// STREAM_PACE_MS: spacing a stream's steps for front ends that draw once per
// animation frame.
//
// A client that batches its state updates per frame keeps only the last of
// the steps that arrive within one frame, so at our speed it shows one token
// box of many; the original service was slow enough that this never showed.
// The pause happens here, in the writer, never in the engine: the scheduler
// keeps computing this stream until its reader has stepsAhead steps waiting
// (a bounded buffer: a paced stream holds at most that much memory), then
// simply leaves it out of the batch, so other streams keep their own speed.
// The wait ends early when the request's context is done, so a client that
// leaves during a pause still stops the generation at the next step.

import (
	"context"
	"time"
)

// maxStreamPace bounds STREAM_PACE_MS: a whole frame at 1 fps is already far
// more than any front end needs, and a longer pause only holds a slot.
const maxStreamPace = time.Second

// pacer keeps one stream's steps at least interval apart. The zero interval
// never waits. Not safe for concurrent use: one stream, one goroutine.
type pacer struct {
	interval time.Duration
	last     time.Time // when the previous step went out; zero before the first
	timer    *time.Timer
}

func newPacer(interval time.Duration) *pacer { return &pacer{interval: interval} }

// wait blocks until interval has passed since the previous sent, or until
// ctx is done (then it returns ctx's error and the stream should end).
func (p *pacer) wait(ctx context.Context) error {
	if p.interval <= 0 || p.last.IsZero() {
		return ctx.Err()
	}
	d := time.Until(p.last.Add(p.interval))
	if d <= 0 {
		return ctx.Err()
	}
	if p.timer == nil {
		p.timer = time.NewTimer(d)
	} else {
		p.timer.Reset(d)
	}
	select {
	case <-p.timer.C:
		return nil
	case <-ctx.Done():
		p.timer.Stop()
		return ctx.Err()
	}
}

// sent records that a step's events have just been written. Counting from
// the end of a write keeps the next write's start at least interval after
// this one's end, so however long a write takes, no two steps arrive closer
// together than interval.
func (p *pacer) sent() {
	if p.interval > 0 {
		p.last = time.Now()
	}
}

// stop releases the timer once the stream is over.
func (p *pacer) stop() {
	if p.timer != nil {
		p.timer.Stop()
	}
}
