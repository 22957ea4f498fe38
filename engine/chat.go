package engine

// Chat transcript, stop tags and reply extraction (docs/API.md, Generation), plus the byte
// tokenizer's text forms: pure functions for generation 1, which the server and the
// terminal chat share so both render a conversation exactly as the model was trained. The
// Model's methods at the end give the same for either generation, on token ids.

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"nielsgpt/gguf"
)

// Message is one chat turn. Role is "system", "user" or "assistant".
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

const generationPrompt = "assistant: "

// FormatTranscript renders messages as the model's training text and ends it
// with the generation prompt. A trailing assistant message with empty content
// is that prompt itself, so it is not doubled.
func FormatTranscript(messages []Message) []byte {
	var b bytes.Buffer
	for i, m := range messages {
		if i == len(messages)-1 && endsOpen(messages) {
			b.WriteString(generationPrompt)
			return b.Bytes()
		}
		b.WriteString(m.Role)
		b.WriteString(": ")
		b.WriteString(m.Content)
		b.WriteByte('\n')
	}
	b.WriteString(generationPrompt)
	return b.Bytes()
}

// FormatConversation is the conversation as it stands, in generation 1's
// text: FormatTranscript without the generation prompt it ends with. A last
// assistant message with empty content is that prompt, and a message of the
// conversation, so it stays.
func FormatConversation(messages []Message) []byte {
	transcript := FormatTranscript(messages)
	if endsOpen(messages) {
		return transcript
	}
	return transcript[:len(transcript)-len(generationPrompt)]
}

// endsOpen reports whether the last message is an assistant's with empty
// content: the generation prompt itself, not a finished turn.
func endsOpen(messages []Message) bool {
	if len(messages) == 0 {
		return false
	}
	last := messages[len(messages)-1]
	return last.Role == "assistant" && last.Content == ""
}

// StopTags end a generation: the model has started writing the other side's
// turn, and the reply is cut before the tag.
var StopTags = [][]byte{[]byte("\nuser: "), []byte("\nsystem: ")}

// CutAtStop returns generated cut before the earliest of stops, and whether
// one was found: the engine's stop rule (exported for the server's fake
// engine, so its replies end where a real one's would).
func CutAtStop(generated []byte, stops [][]byte) ([]byte, bool) {
	cut := -1
	for _, stop := range stops {
		if i := bytes.Index(generated, stop); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return generated, false
	}
	return generated[:cut], true
}

// ExtractReply finds the assistant's answer in the decoded transcript: the
// last non-empty text that follows an "assistant: " and runs up to the next
// turn marker or the end.
func ExtractReply(all []byte) string {
	text := DecodeBytes(all)
	ends := []string{"\nsystem: ", "\nuser: ", "\nassistant: "}
	reply := ""
	for from := 0; ; {
		i := strings.Index(text[from:], generationPrompt)
		if i < 0 {
			return reply
		}
		start := from + i + len(generationPrompt)
		end := len(text)
		for _, e := range ends {
			if j := strings.Index(text[start:], e); j >= 0 && start+j < end {
				end = start + j
			}
		}
		if candidate := strings.TrimSpace(text[start:end]); candidate != "" {
			reply = candidate
		}
		from = from + i + 1
	}
}

// DecodeBytes decodes UTF-8 the way Python's errors="replace" does: each
// maximal invalid subpart (a truncated sequence, or a single bad byte) becomes
// one U+FFFD. strings.ToValidUTF8 would merge whole runs into one.
func DecodeBytes(b []byte) string {
	var sb strings.Builder
	sb.Grow(len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n <= 1 {
			n = maximalSubpart(b)
			sb.WriteRune(utf8.RuneError)
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}

// utf8Leads is the table of well-formed UTF-8 sequences (Unicode's Table 3-7):
// for each range of lead bytes, the sequence's length and the range its
// second byte must fall in; later bytes are always 0x80..0xBF.
var utf8Leads = []struct {
	first, last byte // the lead bytes
	want        int  // the sequence's length
	lo, hi      byte // the second byte's range
}{
	{0xC2, 0xDF, 2, 0x80, 0xBF},
	{0xE0, 0xE0, 3, 0xA0, 0xBF},
	{0xE1, 0xEC, 3, 0x80, 0xBF},
	{0xED, 0xED, 3, 0x80, 0x9F},
	{0xEE, 0xEF, 3, 0x80, 0xBF},
	{0xF0, 0xF0, 4, 0x90, 0xBF},
	{0xF1, 0xF3, 4, 0x80, 0xBF},
	{0xF4, 0xF4, 4, 0x80, 0x8F},
}

// maximalSubpart is the length of the longest prefix of b that starts a
// well-formed UTF-8 sequence without completing it (at least 1).
func maximalSubpart(b []byte) int {
	for _, l := range utf8Leads {
		if b[0] < l.first || b[0] > l.last {
			continue
		}
		n := 1
		if n < len(b) && b[n] >= l.lo && b[n] <= l.hi {
			n++
			for n < l.want && n < len(b) && b[n] >= 0x80 && b[n] <= 0xBF {
				n++
			}
		}
		return n
	}
	return 1 // not a lead byte at all
}

// TokenText is a token's bytes decoded as UTF-8 with replacement: a lone
// byte >= 0x80 becomes U+FFFD.
func TokenText(id int) string {
	if id < 0x80 {
		return string(rune(id))
	}
	return string(utf8.RuneError)
}

// TokenDisplay shows printable ASCII as itself and every other byte as \xNN.
func TokenDisplay(id int) string {
	if id >= 32 && id <= 126 {
		return string(rune(id))
	}
	return fmt.Sprintf("\\x%02x", id)
}

// PendingUTF8 is how many bytes at the end of b begin a well-formed UTF-8
// character that more bytes could still complete: what a streaming writer
// holds back so that it never sends half a character.
func PendingUTF8(b []byte) int {
	for n := 1; n <= min(utf8.UTFMax-1, len(b)); n++ {
		c := b[len(b)-n]
		if c >= 0x80 && c < 0xC0 {
			continue // a continuation byte: the character began earlier
		}
		for _, l := range utf8Leads {
			if c >= l.first && c <= l.last && n < l.want && maximalSubpart(b[len(b)-n:]) == n {
				return n
			}
		}
		return 0
	}
	return 0
}

// The chat of either generation, on token ids: the model's Generation decides how a
// transcript is written, when a reply ends and where it is read from. Generation 1 writes
// text (FormatTranscript) whose bytes are the ids; generation 2 is token-native: each
// message is its role's special piece, the encoded content and end-of-turn, and the
// generation prompt is the assistant's piece.

// gen2RoleIDs are generation 2's role pieces, which the model may never generate: a
// reply that wrote one would be speaking for another turn.
var gen2RoleIDs = []int{gguf.ChatSystemID, gguf.ChatUserID, gguf.ChatAssistantID}

func gen2RoleID(role string) (int32, error) {
	switch role {
	case "system":
		return gguf.ChatSystemID, nil
	case "user":
		return gguf.ChatUserID, nil
	case "assistant":
		return gguf.ChatAssistantID, nil
	}
	return 0, fmt.Errorf("role %q is not system, user or assistant", role)
}

// FormatMessages is the conversation as it stands, for scoring: FormatChat without the
// generation prompt it appends (FormatConversation for generation 1). A last assistant
// message with empty content is that prompt, and a message of the conversation, so it
// stays.
func (m *Model) FormatMessages(messages []Message) ([]int32, error) {
	if m.cfg.Generation() == 1 {
		return bytesToInt32s(FormatConversation(messages)), nil
	}
	ids, err := m.FormatChat(messages)
	if err != nil || endsOpen(messages) {
		return ids, err
	}
	return ids[:len(ids)-1], nil // the assistant piece
}

// FormatChat is the model's transcript of messages as token ids, ending with the
// generation prompt. As in FormatTranscript, a trailing assistant message with empty
// content is that prompt itself.
func (m *Model) FormatChat(messages []Message) ([]int32, error) {
	if m.cfg.Generation() == 1 {
		return bytesToInt32s(FormatTranscript(messages)), nil
	}
	var ids []int32
	for i, msg := range messages {
		role, err := gen2RoleID(msg.Role)
		if err != nil {
			return nil, err
		}
		if i == len(messages)-1 && endsOpen(messages) {
			return append(ids, gguf.ChatAssistantID), nil
		}
		ids = append(ids, role)
		for _, id := range m.tok.Encode(msg.Content) {
			ids = append(ids, int32(id))
		}
		ids = append(ids, gguf.ChatEndOfTurnID)
	}
	return append(ids, gguf.ChatAssistantID), nil
}

// Encode is text as the model's token ids (its bytes for generation 1).
func (m *Model) Encode(text []byte) []int32 {
	if m.cfg.Generation() == 1 {
		return bytesToInt32s(text)
	}
	return intsToInt32s(m.tok.Encode(string(text)))
}

// Decode is the text of ids: UTF-8 with replacement for generation 1's bytes,
// SentencePiece's DecodeIds for generation 2.
func (m *Model) Decode(ids []int32) string {
	if m.cfg.Generation() == 1 {
		return DecodeBytes(int32sToBytes(ids))
	}
	return m.tok.Decode(int32sToInts(ids))
}

// TokenText is what one token reads as: its byte decoded (generation 1, see the function
// TokenText), or its piece decoded alone (generation 2).
func (m *Model) TokenText(id int) string {
	if m.cfg.Generation() == 1 {
		return TokenText(id)
	}
	return m.tok.Decode([]int{id})
}

// TokenDisplay is a token shown to a person: generation 1's byte as TokenDisplay shows it,
// generation 2's piece with U+2581 as a space and byte pieces as \xNN.
func (m *Model) TokenDisplay(id int) string {
	if m.cfg.Generation() == 1 {
		return TokenDisplay(id)
	}
	return m.tok.Display(id)
}

// TokenBytes is the token's share of the text (tokenizer.Tokenizer's TokenBytes): its
// byte (generation 1), or its piece's text with U+2581 as a space, a byte piece's byte
// (generation 2). Joined over a generation, they are the text a stream shows, which for
// generation 2 is DecodeIds' except that a leading space is kept. The slice is the
// model's own: read it, do not change it. Nil for an id outside the vocabulary.
func (m *Model) TokenBytes(id int) []byte {
	if id < 0 || id >= len(m.tokenBytes) {
		return nil
	}
	return m.tokenBytes[id]
}

// gen2Reply is the reply of a generation-2 transcript: the ids after the last
// assistant piece up to the first end-of-turn after it, decoded.
func (m *Model) gen2Reply(ids []int32) string {
	start := 0
	for i, id := range ids {
		if id == gguf.ChatAssistantID {
			start = i + 1
		}
	}
	end := start
	for end < len(ids) && ids[end] != gguf.ChatEndOfTurnID {
		end++
	}
	return m.Decode(ids[start:end])
}

func bytesToInt32s(b []byte) []int32 {
	ids := make([]int32, len(b))
	for i, c := range b {
		ids[i] = int32(c)
	}
	return ids
}

func intsToInt32s(ids []int) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

func int32sToInts(ids []int32) []int {
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}
