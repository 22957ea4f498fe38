package hub

// A one-line download progress bar (bytes, total, percentage, rate, time left), redrawn in
// place with '\r'. Small enough to own rather than pull in a dependency for.

import (
	"fmt"
	"io"
	"strings"
	"time"
)

type progressBar struct {
	w          io.Writer // nil = draw nothing
	name       string
	total      int64 // -1 when unknown
	startBytes int64 // already on disk when this transfer began (a resume), not counted in the rate
	done       int64
	start      time.Time
	lastDraw   time.Time
	lastWidth  int
	drawn      bool
}

func newProgressBar(w io.Writer, name string, total, have int64) *progressBar {
	now := time.Now()
	return &progressBar{w: w, name: name, total: total, startBytes: have, done: have, start: now}
}

// update records progress and redraws at most every tuning.progressEvery, so a fast
// download does not spend its time writing to the terminal.
func (p *progressBar) update(done int64) {
	p.done = done
	if p.w == nil {
		return
	}
	if now := time.Now(); p.drawn && now.Sub(p.lastDraw) < tuning.progressEvery {
		return
	}
	p.draw()
}

// finish draws the final state and ends the line, so later output starts on a fresh one.
func (p *progressBar) finish() {
	if p.w == nil {
		return
	}
	p.draw()
	fmt.Fprint(p.w, "\n")
}

func (p *progressBar) draw() {
	now := time.Now()
	p.lastDraw, p.drawn = now, true

	elapsed := now.Sub(p.start).Seconds()
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.done-p.startBytes) / elapsed
	}

	var b strings.Builder
	b.WriteString(p.name)
	b.WriteString(" ")
	if p.total > 0 {
		const width = 24
		frac := min(float64(p.done)/float64(p.total), 1)
		filled := int(frac * width)
		b.WriteString("[" + strings.Repeat("=", filled) + strings.Repeat(" ", width-filled) + "] ")
		fmt.Fprintf(&b, "%s / %s %3d%%", humanBytes(p.done), humanBytes(p.total), int(frac*100))
	} else {
		b.WriteString(humanBytes(p.done))
	}
	fmt.Fprintf(&b, "  %s/s", humanBytes(int64(rate)))
	if p.total > 0 && rate > 0 && p.done < p.total {
		left := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
		fmt.Fprintf(&b, "  %s left", left.Round(time.Second))
	}

	line := b.String()
	// Pad over the previous, possibly longer, line instead of using terminal escape codes,
	// which not every terminal (or log viewer) understands.
	pad := max(p.lastWidth-len(line), 0)
	p.lastWidth = len(line)
	fmt.Fprint(p.w, "\r"+line+strings.Repeat(" ", pad))
}

// humanBytes formats n with binary units: "512 B", "1.5 KiB", "23.4 MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
