package gguf

// Generation 2's vocabulary in the GGUF, so that a file is self-contained: the server
// needs no spm.model beside it. The keys are llama.cpp's where it has one (its token types
// are SentencePiece's enum, as ours are); what llama.cpp has no key for lives under
// nielsgpt.tokenizer. The writer and the reader run the same checks (CheckVocabulary), so
// a file the writer accepts is one the reader accepts and the tokenizer package can build.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"nielsgpt/tokenizer"
)

const (
	keyTokTokens       = "tokenizer.ggml.tokens"               // string[]: the pieces, U+2581 for a space
	keyTokScores       = "tokenizer.ggml.scores"               // f32[]
	keyTokTypes        = "tokenizer.ggml.token_type"           // i32[]: tokenizer.PieceType
	keyTokCharsmap     = "tokenizer.ggml.precompiled_charsmap" // u8[]: empty for the identity normaliser
	keyTokUnkID        = "tokenizer.ggml.unknown_token_id"     // u32 each; absent means none
	keyTokBosID        = "tokenizer.ggml.bos_token_id"
	keyTokEosID        = "tokenizer.ggml.eos_token_id"
	keyTokPadID        = "tokenizer.ggml.padding_token_id"
	keyTokAddSpace     = "tokenizer.ggml.add_space_prefix" // bool: SentencePiece's add_dummy_prefix
	keyTokRemoveSpaces = "tokenizer.ggml.remove_extra_whitespaces"
	keyTokEscapeSpaces = "nielsgpt.tokenizer.escape_whitespaces"
	keyTokByteFallback = "nielsgpt.tokenizer.byte_fallback"
	keyTokUnkSurface   = "nielsgpt.tokenizer.unk_surface"
	keyTokNormalizer   = "nielsgpt.tokenizer.normalizer_name"
	keyTokSHA256       = "nielsgpt.tokenizer.sha256" // of the spm.model the vocabulary was read from

	spmTokenizer = "nielsgpt-spm"
)

// The ids of generation 2's chat pieces (chat format "niels-v2"): a message is its role's
// id, the encoded content and ChatEndOfTurnID; the generation prompt is ChatAssistantID.
const (
	ChatSystemID    = 3
	ChatUserID      = 4
	ChatAssistantID = 5
	ChatEndOfTurnID = 6
)

// chatPieces spell the chat pieces as niels-gpt does, up to the hash it puts in each
// (e.g. <|ngpt_sys_84a5…|>). A vocabulary without them at these ids was not trained for
// this chat format, and a model served with it would read its roles as ordinary text.
var chatPieces = []struct {
	id     int
	prefix string
}{{ChatSystemID, "<|ngpt_sys_"}, {ChatUserID, "<|ngpt_usr_"}, {ChatAssistantID, "<|ngpt_asst_"}, {ChatEndOfTurnID, "<|ngpt_eot_"}}

// Vocabulary is a generation-2 model's tokenizer as its GGUF stores it.
type Vocabulary struct {
	tokenizer.Vocab
	SHA256 string // of the spm.model it was read from: 64 lowercase hex digits
}

// CheckVocabulary refuses what a generation-2 file of vocab size v cannot hold: a
// vocabulary the tokenizer package refuses, one of another size than the model's, special
// ids outside it, missing chat pieces, and text that is not UTF-8 (GGUF strings must be).
// The writer and the reader run it; the converter runs it before it writes anything.
func CheckVocabulary(voc *Vocabulary, v int) error {
	if !isSHA256(voc.SHA256) {
		return fmt.Errorf("tokenizer sha256 %q is not 64 lowercase hex digits", voc.SHA256)
	}
	if len(voc.Pieces) != v {
		return fmt.Errorf("the tokenizer has %d pieces but the model's vocab size V is %d", len(voc.Pieces), v)
	}
	if err := voc.Check(); err != nil {
		return err
	}
	for id, p := range voc.Pieces {
		if !utf8.ValidString(p.Text) {
			return fmt.Errorf("tokenizer piece %d is not valid UTF-8", id)
		}
	}
	if !utf8.ValidString(voc.UnkSurface) || !utf8.ValidString(voc.NormalizerName) {
		return errors.New("tokenizer unk_surface or normalizer name is not valid UTF-8")
	}
	for _, id := range []struct {
		name string
		id   int
	}{{"unknown", voc.UnkID}, {"bos", voc.BosID}, {"eos", voc.EosID}, {"padding", voc.PadID}} {
		if id.id < -1 || id.id >= v {
			return fmt.Errorf("tokenizer %s id %d is outside the vocabulary (-1 for none, or 0..%d)", id.name, id.id, v-1)
		}
	}
	for _, c := range chatPieces {
		if c.id >= v {
			return fmt.Errorf("the vocabulary of %d pieces has no chat piece %s…|> at id %d", v, c.prefix, c.id)
		}
		p := voc.Pieces[c.id]
		if p.Type != tokenizer.PieceUserDefined || !strings.HasPrefix(p.Text, c.prefix) || !strings.HasSuffix(p.Text, "|>") {
			return fmt.Errorf("tokenizer piece %d is %q (type %d), want the user-defined chat piece %s…|> that niels-gpt's chat format needs there",
				c.id, p.Text, p.Type, c.prefix)
		}
	}
	return nil
}

func isSHA256(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == s
}

// vocabularyKVs lists the tokenizer keys in file order.
func vocabularyKVs(voc *Vocabulary) []kv {
	n := len(voc.Pieces)
	texts, scores, types := make([]string, n), make([]float32, n), make([]int32, n)
	for i, p := range voc.Pieces {
		texts[i], scores[i], types[i] = p.Text, p.Score, int32(p.Type)
	}
	kvs := []kv{
		{keyTokenizer, spmTokenizer},
		{keyTokTokens, texts},
		{keyTokScores, scores},
		{keyTokTypes, types},
		{keyTokCharsmap, append([]uint8{}, voc.Charsmap...)}, // never nil: an empty array, not a missing key
	}
	for _, id := range []struct {
		key string
		id  int
	}{{keyTokUnkID, voc.UnkID}, {keyTokBosID, voc.BosID}, {keyTokEosID, voc.EosID}, {keyTokPadID, voc.PadID}} {
		if id.id >= 0 {
			kvs = append(kvs, kv{id.key, uint32(id.id)})
		}
	}
	return append(kvs,
		kv{keyTokAddSpace, voc.AddDummyPrefix},
		kv{keyTokRemoveSpaces, voc.RemoveExtraWhitespaces},
		kv{keyTokEscapeSpaces, voc.EscapeWhitespaces},
		kv{keyTokByteFallback, voc.ByteFallback},
		kv{keyTokUnkSurface, voc.UnkSurface},
		kv{keyTokNormalizer, voc.NormalizerName},
		kv{keyTokSHA256, voc.SHA256},
	)
}

// vocabulary reads the tokenizer keys of a generation-2 file whose vocab size is v and
// checks them as the writer did. Every array is already bounded by the file's size (the
// parser refuses counts the bytes cannot hold), so nothing here allocates beyond it.
func (f *File) vocabulary(v int) (*Vocabulary, error) {
	texts, err := metadata[[]string](f, keyTokTokens)
	if err != nil {
		return nil, err
	}
	scores, err := metadata[[]float32](f, keyTokScores)
	if err != nil {
		return nil, err
	}
	types, err := metadata[[]int32](f, keyTokTypes)
	if err != nil {
		return nil, err
	}
	if len(scores) != len(texts) || len(types) != len(texts) {
		return nil, fmt.Errorf("%d tokens, %d scores and %d token types: want one of each per token", len(texts), len(scores), len(types))
	}
	if len(texts) != v {
		return nil, fmt.Errorf("%d tokens in %s but the model's vocab size V is %d", len(texts), keyTokTokens, v)
	}
	voc := &Vocabulary{}
	voc.Pieces = make([]tokenizer.Piece, len(texts))
	for i := range texts {
		voc.Pieces[i] = tokenizer.Piece{Text: texts[i], Score: scores[i], Type: tokenizer.PieceType(types[i])}
	}
	if voc.Charsmap, err = metadata[[]uint8](f, keyTokCharsmap); err != nil {
		return nil, err
	}
	for _, id := range []struct {
		key string
		dst *int
	}{{keyTokUnkID, &voc.UnkID}, {keyTokBosID, &voc.BosID}, {keyTokEosID, &voc.EosID}, {keyTokPadID, &voc.PadID}} {
		*id.dst = -1
		if _, ok := f.KV[id.key]; !ok {
			continue
		}
		x, err := metadata[uint32](f, id.key)
		if err != nil {
			return nil, err
		}
		*id.dst = int(min(x, uint32(v))) // out of range stays out of range, without overflow
	}
	if err := f.vocabularyFlags(voc); err != nil {
		return nil, err
	}
	if err := CheckVocabulary(voc, v); err != nil {
		return nil, err
	}
	return voc, nil
}

// vocabularyFlags reads the normaliser's flags and the tokenizer's strings.
func (f *File) vocabularyFlags(voc *Vocabulary) error {
	for _, b := range []struct {
		key string
		dst *bool
	}{
		{keyTokAddSpace, &voc.AddDummyPrefix}, {keyTokRemoveSpaces, &voc.RemoveExtraWhitespaces},
		{keyTokEscapeSpaces, &voc.EscapeWhitespaces}, {keyTokByteFallback, &voc.ByteFallback},
	} {
		x, err := metadata[bool](f, b.key)
		if err != nil {
			return err
		}
		*b.dst = x
	}
	for _, s := range []struct {
		key string
		dst *string
	}{{keyTokUnkSurface, &voc.UnkSurface}, {keyTokNormalizer, &voc.NormalizerName}, {keyTokSHA256, &voc.SHA256}} {
		x, err := metadata[string](f, s.key)
		if err != nil {
			return err
		}
		*s.dst = x
	}
	return nil
}

// Tokenizer returns the model's tokenizer: tokenizer.Bytes for generation 1, and for
// generation 2 the SentencePiece model built from the vocabulary the file stores. It
// checks the whole file first (ModelConfig).
func (f *File) Tokenizer() (tokenizer.Tokenizer, error) {
	cfg, err := f.ModelConfig()
	if err != nil {
		return nil, err
	}
	if cfg.Generation() == 1 {
		return tokenizer.Bytes{}, nil
	}
	voc, err := f.vocabulary(cfg.Vocab)
	if err != nil {
		return nil, err
	}
	return tokenizer.FromVocab(voc.Vocab)
}

// TokenizerSHA256 is the sha256 of the spm.model a generation-2 file's vocabulary was
// read from, which a conversion cache compares with the tokenizer it would use; ok is
// false for a file that stores none (generation 1).
func (f *File) TokenizerSHA256() (sum string, ok bool) {
	sum, ok = f.KV[keyTokSHA256].(string)
	return sum, ok
}
