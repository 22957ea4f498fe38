package convert

// What generation 2 adds to a checkpoint: the generation, recognised from the state-dict
// keys; the sha256 of the tokenizer it was trained with, which the training code records;
// and the tokenizer itself, read from the spm.model kept beside the checkpoint (not inside
// it), checked against that sha256 and stored in the GGUF so that the GGUF is
// self-contained.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"nielsgpt/gguf"
	"nielsgpt/tokenizer"
)

// TokenizerFile is the name niels-gpt gives its tokenizer, kept beside best.pt.
const TokenizerFile = "spm.model"

// TokenizerBeside is the spm.model in the checkpoint's folder, or "" when there is none:
// where niels-gpt keeps the tokenizer, so where a converter looks when none is named.
func TokenizerBeside(checkpointPath string) string {
	p := filepath.Join(filepath.Dir(checkpointPath), TokenizerFile)
	if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() {
		return p
	}
	return ""
}

// recogniseGeneration sets cfg's norm and MLP from the state-dict keys, as niels-gpt's own
// loader tells its models apart: generation 2's SwiGLU has mlp.fc_a where generation 1's
// MLP has mlp.fc1. Only when the keys hold neither does model_cfg._raw's mlp_type decide,
// so that validation then names the keys of the generation the checkpoint claims.
func recogniseGeneration(cfg *gguf.ModelConfig, names []string, modelCfg any) error {
	var gen1, gen2 bool
	for _, n := range names {
		gen1 = gen1 || strings.Contains(n, ".mlp.fc1.")
		gen2 = gen2 || strings.Contains(n, ".mlp.fc_a.")
	}
	if gen1 && gen2 {
		return errors.New("model_state has both mlp.fc1 (generation 1) and mlp.fc_a (generation 2) keys: not a niels-gpt model")
	}
	if !gen1 && !gen2 {
		if d, ok := modelCfg.(*pyDict); ok {
			if raw, ok := d.get("_raw"); ok {
				if rd, ok := raw.(*pyDict); ok {
					mlp, _ := rd.get("mlp_type")
					gen2 = mlp == "swiglu"
				}
			}
		}
	}
	if gen2 {
		cfg.Norm, cfg.MLP = gguf.NormRMS, gguf.MLPSwiGLU
	}
	return nil
}

// recordedTokenizerSHA256 reads train_cfg._settings_meta.tokenizer_sha256, lower-cased;
// "" when train_cfg does not record one (generation 1, or an older training run).
func recordedTokenizerSHA256(top *pyDict) (string, error) {
	train, _ := top.get("train_cfg")
	td, ok := train.(*pyDict)
	if !ok {
		return "", nil
	}
	meta, _ := td.get("_settings_meta")
	md, ok := meta.(*pyDict)
	if !ok {
		return "", nil
	}
	v, ok := md.get("tokenizer_sha256")
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if b, err := hex.DecodeString(s); !ok || err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("train_cfg._settings_meta.tokenizer_sha256 is %s, not a sha256", describeValue(v))
	}
	return strings.ToLower(s), nil
}

func describeValue(v any) string {
	if s, ok := v.(string); ok {
		return fmt.Sprintf("%q", s)
	}
	return "a " + typeName(v)
}

// UseTokenizer reads the SentencePiece model at path as this generation-2 checkpoint's
// tokenizer. Its sha256 must be the one the checkpoint records, when it records one: a
// model served with another tokenizer than it was trained with reads every id as a
// different piece, and nothing else would notice. Whether the vocabulary fits the model
// is Validate's to check.
func (c *Checkpoint) UseTokenizer(path string) error {
	if c.Config.Generation() == 1 {
		return fmt.Errorf("this is a generation-1 (byte-level) checkpoint, which takes no tokenizer: leave out --tokenizer/TOKENIZER %s", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, tokenizer.MaxModelBytes+1))
	if err != nil {
		return fmt.Errorf("tokenizer %s: %w", path, err)
	}
	if len(data) > tokenizer.MaxModelBytes {
		return fmt.Errorf("tokenizer %s is over %d bytes: not a SentencePiece model", path, tokenizer.MaxModelBytes)
	}
	h := sha256.Sum256(data)
	sum := hex.EncodeToString(h[:])
	if c.TokenizerSHA256 != "" && sum != c.TokenizerSHA256 {
		return fmt.Errorf("tokenizer %s has sha256 %s, but the checkpoint was trained with the tokenizer whose sha256 is %s "+
			"(train_cfg._settings_meta.tokenizer_sha256): pass the spm.model it was trained with", path, sum, c.TokenizerSHA256)
	}
	v, err := tokenizer.ParseModel(data)
	if err != nil {
		return fmt.Errorf("tokenizer %s: %w", path, err)
	}
	c.Vocab = &gguf.Vocabulary{Vocab: v, SHA256: sum}
	c.tokenizerPath = path
	return nil
}

// checkTokenizer is Validate's part for the tokenizer: generation 2 needs one that fits
// the model (as many pieces as V, the chat pieces at ids 3..6), generation 1 none.
func (c *Checkpoint) checkTokenizer() error {
	if c.Config.Generation() == 1 {
		if c.Vocab != nil {
			return errors.New("a generation-1 (byte-level) checkpoint takes no tokenizer")
		}
		return nil
	}
	if c.Vocab == nil {
		recorded := ""
		if c.TokenizerSHA256 != "" {
			recorded = fmt.Sprintf(" (sha256 %s)", c.TokenizerSHA256)
		}
		return fmt.Errorf("this generation-2 checkpoint needs the SentencePiece tokenizer it was trained with%s, "+
			"which niels-gpt keeps beside it as %s, not inside it: put %s beside the checkpoint, "+
			"or name it: nielsgpt convert CKPT.pt --tokenizer PATH -o OUT.gguf, or serve with --tokenizer PATH (TOKENIZER=PATH)",
			recorded, TokenizerFile, TokenizerFile)
	}
	if err := gguf.CheckVocabulary(c.Vocab, c.Config.Vocab); err != nil {
		return fmt.Errorf("tokenizer %s does not fit the model: %w", c.tokenizerPath, err)
	}
	return nil
}
