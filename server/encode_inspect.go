package server

// Response bodies of POST /inspect/attention (JSON; its .npz form is in
// npz.go) and POST /inspect/score, hand-written like the trace events: an
// attention answer holds up to MAX_ATTENTION_FLOATS probabilities, and
// encoding/json's reflection over [][][][]float32 would hold the whole text
// in memory at once. The attention encoder writes through a small buffer
// instead, so its memory does not grow with the answer.

import (
	"io"
	"math"
	"strconv"

	"nielsgpt/engine"
)

// appendTokenLists writes `"token_ids":[...],"tokens":[...],"tokens_display":[...]`.
func (t *tokenTable) appendTokenLists(b []byte, ids []int) []byte {
	b = append(b, `"token_ids":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(id), 10)
	}
	b = append(b, `],"tokens":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.textOf(id))
	}
	b = append(b, `],"tokens_display":[`...)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.displayOf(id))
	}
	return append(b, ']')
}

// attentionFlushBytes is how much encoded text the attention encoder holds
// before writing it out.
const attentionFlushBytes = 64 << 10

// writeAttentionJSON writes the /inspect/attention body:
// {"layers", "token_ids", "tokens", "tokens_display", "attn": [layer][head][t][t]}.
func (t *tokenTable) writeAttentionJSON(w io.Writer, layers, ids []int, attn [][][][]float32) error {
	b := make([]byte, 0, attentionFlushBytes+4096)
	b = append(b, `{"layers":[`...)
	for i, l := range layers {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(l), 10)
	}
	b = append(b, "],"...)
	b = t.appendTokenLists(b, ids)
	b = append(b, `,"attn":[`...)
	for l, heads := range attn {
		if l > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		for h, rows := range heads {
			if h > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			for i, row := range rows {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendFloatRow(b, row)
				if len(b) >= attentionFlushBytes {
					if _, err := w.Write(b); err != nil {
						return err
					}
					b = b[:0]
				}
			}
			b = append(b, ']')
		}
		b = append(b, ']')
	}
	b = append(b, "]}"...)
	_, err := w.Write(b)
	return err
}

// appendScores writes the /inspect/score body. Log-probabilities keep
// float64 precision (they are compared with PyTorch's to 1e-4 and summed
// into mean_logprob); a non-finite one (a token the model gives probability
// 0) is written as null, which JSON can carry.
func (tt *tokenTable) appendScores(b []byte, sc *engine.Scores) []byte {
	b = append(b, `{"offset":`...)
	b = strconv.AppendInt(b, int64(sc.Offset), 10)
	b = append(b, ',')
	b = tt.appendTokenLists(b, sc.TokenIDs)
	b = append(b, `,"scores":[`...)
	sum, n, nBytes := 0.0, 0, 0
	for i, p := range sc.Positions {
		if i == 0 {
			b = append(b, "null"...) // nothing in the window precedes the first token
			continue
		}
		sum += p.Logprob
		n++
		nBytes += len(tt.tokenBytes(sc.TokenIDs[i]))
		b = append(b, `,{"logprob":`...)
		b = appendFloat64(b, p.Logprob)
		b = append(b, `,"entropy":`...)
		b = appendFloat64(b, p.Entropy)
		b = append(b, `,"rank":`...)
		b = strconv.AppendInt(b, int64(p.Rank), 10)
		b = append(b, `,"topk":[`...)
		for j, t := range p.Top {
			if j > 0 {
				b = append(b, ',')
			}
			b = append(b, '{')
			b = tt.appendTokenFields(b, t.TokenID)
			b = append(b, `,"logprob":`...)
			b = appendFloat64(b, t.Logprob)
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	b = append(b, `],"mean_logprob":`...)
	// One token scores nothing: the mean of no log-probabilities is null.
	mean := math.NaN()
	if n > 0 {
		mean = sum / float64(n)
	}
	b = appendFloat64(b, mean)
	// Bits per byte of the scored tokens' text: per token for a byte-level
	// model, and for a generation-2 model over the bytes its pieces spell.
	perByte := math.NaN()
	if nBytes > 0 {
		perByte = -(sum / float64(nBytes)) / math.Ln2 // as −mean/ln 2 when each token is a byte
	}
	b = append(b, `,"bits_per_byte":`...)
	b = appendFloat64(b, perByte)
	return append(b, '}')
}

// appendFloat64 writes x in its shortest round-trip form, or null when it
// is not finite.
func appendFloat64(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, x, 'g', -1, 64)
}
