package tokenizer

// SentencePiece's unigram model: normalise (normalize.go), then the most likely split of
// the normalised text into pieces (Viterbi over the pieces' scores), then byte fallback for
// what no piece covers. The search is sentencepiece's own "optimized" unigram encoder's,
// step for step, including its float arithmetic, so that ties break the same way.

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// unkPenalty is how much less likely than the least likely piece an unknown character is.
const unkPenalty = 10

// userDefinedBonus is subtracted from a user-defined piece's score (length × the highest
// normal score), so that such a piece beats any split of itself; sentencepiece computes
// it in double precision.
const userDefinedBonus = 0.1

// SentencePiece is a unigram SentencePiece model. It is immutable and safe for concurrent
// use.
type SentencePiece struct {
	vocab       Vocab
	charsmap    *charsmap
	pieces      *pieceTrie // the pieces encoding can produce: normal, user-defined, unused
	userDefined *pieceTrie // the user-defined pieces, matched in the raw text
	unkID       int32
	maxScore    float32 // highest normal score, floored at 0 as sentencepiece does
	unkScore    float32
	// byteID is the id byte fallback emits for each byte: sentencepiece looks <0xNN> up by
	// text, which finds <unk> if the model lacks the piece.
	byteID [256]int32
	// lookupID is, per id, the id decoding uses: sentencepiece decodes ids via their text,
	// and looks a text up among control, unknown and byte pieces first.
	lookupID []int32
}

var _ Tokenizer = (*SentencePiece)(nil)

// LoadModel reads and checks a SentencePiece .model file.
func LoadModel(path string) (*SentencePiece, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := ReadModel(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return FromVocab(v)
}

// FromVocab builds a model from a vocabulary (ParseModel's, or one stored elsewhere, such
// as in a GGUF). The vocabulary is checked and copied.
func FromVocab(v Vocab) (*SentencePiece, error) {
	if err := v.Check(); err != nil {
		return nil, err
	}
	m := &SentencePiece{vocab: v.clone(), unkID: -1}
	m.charsmap, _ = parseCharsmap(m.vocab.Charsmap) // Check has parsed it once already
	m.indexPieces()
	return m, nil
}

// Export returns a copy of the model's vocabulary, to store it (e.g. under GGUF keys) and
// rebuild the same model with FromVocab.
func (m *SentencePiece) Export() Vocab { return m.vocab.clone() }

func (v Vocab) clone() Vocab {
	v.Pieces = slices.Clone(v.Pieces)
	v.Charsmap = slices.Clone(v.Charsmap)
	return v
}

// indexPieces builds the tries and tables encoding and decoding use, from a checked vocab.
func (m *SentencePiece) indexPieces() {
	var texts, userTexts []string
	var ids, userIDs []int32
	textID := make(map[string]int32, len(m.vocab.Pieces))
	reservedID := make(map[string]int32)
	// sentencepiece starts the maximum at FLT_MIN, the smallest normal float, and takes
	// FLT_MIN afterwards to mean "no normal piece": the maximum is then 0. Scores are log
	// probabilities, all negative, so in practice the maximum is 0.
	const fltMin = float32(0x1p-126)
	minScore, maxScore := float32(math.MaxFloat32), fltMin
	for i, p := range m.vocab.Pieces {
		id := int32(i)
		switch {
		case p.Type.encodable():
			texts, ids = append(texts, p.Text), append(ids, id)
			textID[p.Text] = id
		default:
			reservedID[p.Text] = id
		}
		switch p.Type {
		case PieceUserDefined:
			userTexts, userIDs = append(userTexts, p.Text), append(userIDs, id)
		case PieceUnknown:
			m.unkID = id
		case PieceNormal:
			// Comparisons, not min and max: like std::min and std::max they skip a NaN
			// score, where Go's builtins would return it.
			if p.Score < minScore {
				minScore = p.Score
			}
			if maxScore < p.Score {
				maxScore = p.Score
			}
		}
	}
	if minScore == math.MaxFloat32 {
		minScore = 0
	}
	if maxScore == fltMin {
		maxScore = 0
	}
	m.maxScore = maxScore
	m.unkScore = minScore - unkPenalty
	m.pieces = buildTrie(texts, ids)
	if len(userTexts) > 0 {
		m.userDefined = buildTrie(userTexts, userIDs)
	}
	lookup := func(text string) int32 {
		if id, ok := reservedID[text]; ok {
			return id
		}
		if id, ok := textID[text]; ok {
			return id
		}
		return m.unkID
	}
	for b := range m.byteID {
		m.byteID[b] = lookup(bytePiece(byte(b)))
	}
	m.lookupID = make([]int32, len(m.vocab.Pieces))
	for i, p := range m.vocab.Pieces {
		m.lookupID[i] = lookup(p.Text)
	}
}

// VocabSize is the number of pieces.
func (m *SentencePiece) VocabSize() int { return len(m.vocab.Pieces) }

// Piece is the piece's text as stored in the model.
func (m *SentencePiece) Piece(id int) string {
	if id < 0 || id >= len(m.vocab.Pieces) {
		return ""
	}
	return m.vocab.Pieces[id].Text
}

// Type is the piece's type (0 if id is out of range).
func (m *SentencePiece) Type(id int) PieceType {
	if id < 0 || id >= len(m.vocab.Pieces) {
		return 0
	}
	return m.vocab.Pieces[id].Type
}

// PieceID finds a piece by its text the way sentencepiece's PieceToId does (control,
// unknown and byte pieces first); ok is false if no piece has this text.
func (m *SentencePiece) PieceID(text string) (id int, ok bool) {
	for i, p := range m.vocab.Pieces {
		if p.Text == text {
			return int(m.lookupID[i]), true
		}
	}
	return int(m.unkID), false
}

// Display shows a piece with U+2581 as a space and byte pieces as \xNN.
func (m *SentencePiece) Display(id int) string {
	if id < 0 || id >= len(m.vocab.Pieces) {
		return ""
	}
	p := m.vocab.Pieces[id]
	if b, ok := pieceByte(p.Text); ok && p.Type == PieceByte {
		return fmt.Sprintf("\\x%02x", b)
	}
	return strings.ReplaceAll(p.Text, spaceSymbol, " ")
}

// TokenBytes is the piece's share of the text: its byte for a byte piece, nothing for a
// control piece, the unk surface for <unk>, and otherwise its text with U+2581 as a space.
func (m *SentencePiece) TokenBytes(id int) []byte {
	if id < 0 || id >= len(m.vocab.Pieces) {
		return nil
	}
	p := m.vocab.Pieces[id]
	switch p.Type {
	case PieceByte:
		if b, ok := pieceByte(p.Text); ok {
			return []byte{b}
		}
	case PieceControl:
		return []byte{}
	case PieceUnknown:
		return []byte(m.vocab.UnkSurface)
	}
	return []byte(strings.ReplaceAll(p.Text, spaceSymbol, " "))
}

// oneCharLen is the length of the UTF-8 sequence a lead byte announces, judged by its top
// four bits only, as sentencepiece's unigram encoder steps through text.
func oneCharLen(lead byte) int {
	return int("\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x02\x02\x03\x04"[lead>>4])
}

// pathEnd is the best path found so far that ends at a byte position.
type pathEnd struct {
	score float32
	start int32 // where its last piece starts; -1 while no path ends here
	id    int32 // its last piece
}

// Encode returns the ids of text: sentencepiece's EncodeAsIds.
func (m *SentencePiece) Encode(text string) []int {
	norm := m.normalize(text)
	if len(norm) == 0 {
		return nil
	}
	ends := m.viterbi(norm)
	ids := make([]int, m.walkBack(norm, ends, nil))
	m.walkBack(norm, ends, ids)
	return ids
}

// walkBack follows the best path from the end of norm to its start and returns how many
// ids it spells; given ids of that length, it also fills them in. Consecutive <unk>s are
// one <unk> (as sentencepiece merges them); under byte fallback an <unk> span is its
// bytes' pieces instead.
func (m *SentencePiece) walkBack(norm []byte, ends []pathEnd, ids []int) int {
	count, i := 0, len(ids)
	prevUnk := false
	for end := int32(len(norm)); end > 0 && ends[end].start >= 0; end = ends[end].start {
		e := ends[end]
		unk := e.id == m.unkID
		switch {
		case unk && m.vocab.ByteFallback:
			count += int(end - e.start)
			for k := end - 1; ids != nil && k >= e.start; k-- {
				i--
				ids[i] = int(m.byteID[norm[k]])
			}
		case unk && prevUnk: // merged into the <unk> after it
		default:
			count++
			if ids != nil {
				i--
				ids[i] = int(e.id)
			}
		}
		prevUnk = unk
	}
	return count
}

// viterbi finds, for every position of norm, the best-scoring split of norm up to it.
// From each character boundary it follows the trie through every piece that starts there;
// a character no single piece covers gets an <unk> of one character instead. Scores are
// float32 sums, with the candidate compared in double precision for normal and
// user-defined pieces and in single precision for <unk>, as in sentencepiece.
func (m *SentencePiece) viterbi(norm []byte) []pathEnd {
	n := len(norm)
	ends := make([]pathEnd, n+1)
	for i := 1; i <= n; i++ {
		ends[i].start = -1
	}
	t := m.pieces
	for start := 0; start < n; {
		base := ends[start].score
		charLen := min(oneCharLen(norm[start]), n-start)
		coveredByOne := false
		node := int32(0)
		for pos := start; pos < n; pos++ {
			if node = t.child(node, norm[pos]); node < 0 {
				break
			}
			id := t.nodes[node].value
			if id < 0 {
				continue
			}
			p := &m.vocab.Pieces[id]
			if p.Type == PieceUnused {
				continue
			}
			length := pos + 1 - start
			score := float64(p.Score)
			if p.Type == PieceUserDefined {
				score = float64(float32(length)*m.maxScore) - userDefinedBonus
			}
			candidate := score + float64(base)
			if e := &ends[pos+1]; e.start < 0 || candidate > float64(e.score) {
				*e = pathEnd{score: float32(candidate), start: int32(start), id: id}
			}
			if length == charLen {
				coveredByOne = true
			}
		}
		if !coveredByOne {
			candidate := m.unkScore + base
			if e := &ends[start+charLen]; e.start < 0 || candidate > e.score {
				*e = pathEnd{score: candidate, start: int32(start), id: m.unkID}
			}
		}
		start += charLen
	}
	return ends
}

// Decode returns the text of ids: sentencepiece's DecodeIds. Spaces come back from U+2581;
// control pieces decode to nothing; <unk> to the model's unk surface; runs of byte pieces
// are joined into bytes and read as UTF-8, each byte that does not start a valid character
// becoming U+FFFD. A leading U+2581 is dropped from the first piece that has a text and,
// when the model removes extra whitespace, from every piece until one gives some text.
// (sentencepiece 0.1.97 does this whether or not the model adds a dummy prefix.)
// Ids out of range are skipped, where sentencepiece raises an error.
func (m *SentencePiece) Decode(ids []int) string {
	out := make([]byte, 0, 4*len(ids))
	var run []byte
	atStart := true
	flushBytes := func() {
		for i := 0; i < len(run); {
			r, n := utf8.DecodeRune(run[i:])
			if r == utf8.RuneError && n <= 1 {
				out = append(out, replacementChar...)
			} else {
				out = append(out, run[i:i+n]...)
			}
			i += n
			atStart = false
		}
		run = run[:0]
	}
	for _, id := range ids {
		if id < 0 || id >= len(m.vocab.Pieces) {
			continue
		}
		p := &m.vocab.Pieces[m.lookupID[id]]
		if p.Type == PieceByte {
			b, _ := pieceByte(p.Text)
			run = append(run, b)
			continue
		}
		flushBytes()
		before := len(out)
		switch p.Type {
		case PieceControl:
			continue
		case PieceUnknown:
			out = append(out, m.vocab.UnkSurface...)
		default:
			text := p.Text
			if atStart {
				text = strings.TrimPrefix(text, spaceSymbol)
			}
			out = appendUnescaped(out, text)
		}
		if !m.vocab.RemoveExtraWhitespaces || len(out) > before {
			atStart = false
		}
	}
	flushBytes()
	return string(out)
}

// appendUnescaped appends text with each U+2581 turned back into a space.
func appendUnescaped(out []byte, text string) []byte {
	for {
		i := strings.Index(text, spaceSymbol)
		if i < 0 {
			return append(out, text...)
		}
		out = append(append(out, text[:i]...), ' ')
		text = text[i+len(spaceSymbol):]
	}
}
