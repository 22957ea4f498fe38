"""Writes the tiny fixture checkpoints and their golden outputs for the engine tests.

Run from the repository root (this is what `make fixtures` does):

    /usr/bin/python3 scripts/make_fixtures.py

Outputs (committed; rerunning reproduces them byte for byte on the same PyTorch):
- testdata/models/tiny_a.pt, tiny_b.pt: `best.pt` files (docs/ARCHITECTURE.md, The model) with random weights;
- testdata/golden/tiny_a.json, tiny_b.json: logits and attention probabilities for a
  full-window prefill, and an 80-step greedy generation computed the reference way
  (the whole window re-run every step, the window rule of docs/API.md §8);
- testdata/golden/tiny_a_hop.json, tiny_b_hop.json: 140-step greedy generations under
  window_hop > 1 (docs/API.md), from the stored checkpoints. `--hop-only` writes just
  these, reading the committed models and leaving everything else as it is.
- testdata/golden/tiny_a_deep.json, tiny_b_deep.json: the deeper traces, from the stored
  checkpoints: every layer's attention row at each greedy step, the logit lens
  (softmax(LN_f(h_l) · tok_embᵀ) after every block l) for the first steps, a greedy run
  with heads ablated (their attention output zeroed before proj, at every position),
  and a text scored in one pass with those heads ablated. `--deep-only` writes just
  these.

The goldens are computed in float64 from the float32 weights as saved, so they are the
exact maths of the stored model, not one float32 implementation's rounding; an engine
in float32 should match them to ~1e-4. The float64 PyTorch forward is checked against a
second, deliberately plain NumPy implementation written from the model's description in docs/ARCHITECTURE.md, so a mistake in
niels_gpt.py (say, the rotary pairing) cannot hide in both the fixtures and the model.

Weights are random but scaled so the output distributions are peaky and greedy choices
are never near-ties (top-1 minus top-2 logit >= 1e-2 at every greedy step): an engine
that is right up to float32 rounding must then pick exactly the golden tokens.
"""

import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import niels_gpt  # noqa: E402  (path set up just above)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# T of tiny_b is small so the 80-step generation slides its window many times.
FIXTURES = [
    {"name": "tiny_a", "seed": 1000, "trace_layer": 1, "best_val_loss": 1.5, "hops": [8, 32],
     "cfg": dict(V=256, T=64, C=64, L=2, H=4, d_ff=256, rope_theta=10000.0)},
    {"name": "tiny_b", "seed": 2000, "trace_layer": 1, "with_optimizer_state": True, "hops": [3, 4, 11, 23],
     "cfg": dict(V=256, T=24, C=48, L=3, H=2, d_ff=96, rope_theta=500.0)},
]

# The prefill window is the last T bytes of this transcript (the window rule, docs/API.md §8), so it
# ends on the generation prompt and includes multi-byte UTF-8 (ids >= 128).
PREFILL_MESSAGES = [
    ("system", "surly chatbot for niels' site. terse."),
    ("user", "hi — what's the café called? ünïcödé ok"),
]
GREEDY_PROMPT = "user: hello\nassistant: "
GREEDY_STEPS = 80
# window_hop goldens: long enough that tiny_a (T=64) runs 100 steps past its window.
HOP_STEPS = 140
# deep goldens: the lens for the first LENS_STEPS steps (a V-wide distribution per
# layer is large); ablation sets tried in order until one changes the greedy tokens.
LENS_STEPS = 12
ABLATIONS = [[(0, 0)], [(0, 1)], [(1, 0)], [(0, 0), (1, 1)], [(1, 1)], [(0, 1), (1, 0)]]
MIN_GAP = 1e-2          # smallest allowed top-1 minus top-2 logit at a greedy step
MIN_DISTINCT = 20       # a generation stuck on a few tokens would test little
MAX_SEED_TRIES = 200
# Weight scales (std = gain / sqrt(fan_in) for matrices; the embedding's is its std).
# Chosen by trying seeds: see random_model() for why each is what it is.
GAINS = {"emb": 1.2, "qkv": 1.5, "proj": 16.0, "fc1": 1.0, "fc2": 16.0}


# ---------------------------------------------------------------------------------------
# Random weights
# ---------------------------------------------------------------------------------------

def random_model(cfg, seed):
    """A NielsGPT with random float32 weights from `seed`.

    Scales: embeddings N(0, 1.2) make the logits (LN output · embedding, C terms) spread
    over ~10 units, so softmax is peaky and greedy gaps are wide. The residual branches
    (proj, fc2) get a large gain so that the blocks, not the token's own embedding,
    dominate the residual stream: with tied weights a residual stream that is mostly
    tok_emb[x] predicts x again, and greedy output degenerates into runs of one byte that
    would hide position and window bugs. qkv's gain of 1.5 gives attention that is neither
    uniform nor one-hot, so attention bugs show in the probabilities. LayerNorm parameters
    are random around (1, 0) so a reader that ignores them (or swaps them) is caught.
    """
    model = niels_gpt.NielsGPT(niels_gpt.make_config(**cfg))
    gen = torch.Generator().manual_seed(seed)

    def normal(p, std, mean=0.0):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen) * std + mean)

    C, d_ff = cfg["C"], cfg["d_ff"]
    normal(model.tok_emb.weight, GAINS["emb"])
    for block in model.blocks:
        for ln in (block.ln1, block.ln2):
            normal(ln.weight, 0.1, 1.0)
            normal(ln.bias, 0.1)
        normal(block.attn.qkv.weight, GAINS["qkv"] / math.sqrt(C))
        normal(block.attn.proj.weight, GAINS["proj"] / math.sqrt(C))
        normal(block.mlp.fc1.weight, GAINS["fc1"] / math.sqrt(C))
        normal(block.mlp.fc1.bias, 0.1)
        normal(block.mlp.fc2.weight, GAINS["fc2"] / math.sqrt(d_ff))
        normal(block.mlp.fc2.bias, 0.1)
    normal(model.ln_f.weight, 0.1, 1.0)
    normal(model.ln_f.bias, 0.1)
    return model.eval()


def optimizer_state_for(model, seed):
    """A real AdamW state dict (one step on a throwaway copy), so one fixture carries
    the `optimizer_state` a training checkpoint has and a reader must skip."""
    copy = niels_gpt.NielsGPT(model.cfg)
    copy.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(copy.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (1, 8), generator=torch.Generator().manual_seed(seed))
    copy(x).square().mean().backward()
    opt.step()
    return opt.state_dict()


# ---------------------------------------------------------------------------------------
# Independent NumPy float64 reference (docs/ARCHITECTURE.md, The model, step by step)
# ---------------------------------------------------------------------------------------

def numpy_forward(state, cfg, ids, ablate=(), lens=None):
    """Returns (logits [t, V], attn [L][H][t, t]) for ids, positions 0..t-1. Heads
    (layer, head) in ablate contribute zeros before proj; lens, a list, gets each
    layer's LN_f(h_l) · tok_embᵀ [t, V]."""
    W = {k: v.detach().numpy().astype(np.float64) for k, v in state.items()}
    C, H, L = cfg["C"], cfg["H"], cfg["L"]
    D = C // H
    t = len(ids)

    def layer_norm(x, w, b):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * w + b

    def gelu(x):
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))

    def rotate(x):  # x [t, D]; pairs (2i, 2i+1), angle pos * theta^(-2i/D)
        out = x.copy()
        for pos in range(t):
            for i in range(D // 2):
                angle = pos * cfg["rope_theta"] ** (-2.0 * i / D)
                a, b = x[pos, 2 * i], x[pos, 2 * i + 1]
                out[pos, 2 * i] = a * math.cos(angle) - b * math.sin(angle)
                out[pos, 2 * i + 1] = a * math.sin(angle) + b * math.cos(angle)
        return out

    h = W["tok_emb.weight"][ids]                                      # [t, C]
    all_attn = []
    for l in range(L):
        p = f"blocks.{l}."
        x = layer_norm(h, W[p + "ln1.weight"], W[p + "ln1.bias"])
        qkv = x @ W[p + "attn.qkv.weight"].T                          # [t, 3C]
        q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
        heads, probs_l = [], []
        for hd in range(H):
            cols = slice(hd * D, (hd + 1) * D)
            qh, kh = rotate(q[:, cols]), rotate(k[:, cols])
            scores = qh @ kh.T / math.sqrt(D)                         # [t, t]
            probs = np.zeros((t, t))
            for i in range(t):  # causal: row i sees keys 0..i only
                row = np.exp(scores[i, :i + 1] - scores[i, :i + 1].max())
                probs[i, :i + 1] = row / row.sum()
            probs_l.append(probs)
            heads.append(np.zeros((t, D)) if (l, hd) in ablate else probs @ v[:, cols])
        all_attn.append(probs_l)
        h = h + np.concatenate(heads, axis=1) @ W[p + "attn.proj.weight"].T
        x = layer_norm(h, W[p + "ln2.weight"], W[p + "ln2.bias"])
        m = gelu(x @ W[p + "mlp.fc1.weight"].T + W[p + "mlp.fc1.bias"])
        h = h + m @ W[p + "mlp.fc2.weight"].T + W[p + "mlp.fc2.bias"]
        if lens is not None:
            lens.append(layer_norm(h, W["ln_f.weight"], W["ln_f.bias"]) @ W["tok_emb.weight"].T)
    h = layer_norm(h, W["ln_f.weight"], W["ln_f.bias"])
    return h @ W["tok_emb.weight"].T, all_attn


# ---------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------

@torch.no_grad()
def run_window(model64, ids):
    """float64 forward of one window: (logits [t, V], attn [L][H][t, t]) as numpy."""
    logits, attn = model64(torch.tensor([ids]), return_attn=True)
    return logits[0].numpy(), [a[0].numpy() for a in attn]


@torch.no_grad()
def greedy_reference(model64, model32, prompt, steps, trace_layer, hop=1):
    """The reference greedy loop: every step re-runs its whole window, positions from 0.
    With hop 1 the window is the last T tokens; otherwise it moves by the window_hop
    rule (niels_gpt.window_start).

    Returns (tokens, logits per step, attn rows per step, smallest top-1/top-2 gap) and
    checks that the float32 model picks the same token at every step."""
    T = model64.cfg["T"]
    ids = list(prompt)
    tokens, step_logits, attn_rows, min_gap = [], [], [], float("inf")
    start = None
    for _ in range(steps):
        start = niels_gpt.window_start(start, len(ids), T, hop)
        window = ids[start:]
        if hop == 1 and window != ids[-T:]:
            raise AssertionError("window_start with hop 1 must be the original rule")
        logits, attn = run_window(model64, window)
        last = logits[-1]
        top2 = np.sort(last)[-2:]
        min_gap = min(min_gap, float(top2[1] - top2[0]))
        token = int(np.argmax(last))
        token32 = int(torch.argmax(model32(torch.tensor([window]))[0, -1]))
        if token32 != token:
            raise AssertionError(f"float32 picks {token32}, float64 picks {token}")
        tokens.append(token)
        step_logits.append(last)
        attn_rows.append(attn[trace_layer][:, -1, :])                # [H, t]
        ids.append(token)
    return tokens, step_logits, attn_rows, min_gap


def ablate_heads(model, heads):
    """Zero the attention output of each (layer, head) in heads before proj, at every
    position: a pre-hook on proj, so the model's own forward does the rest. Returns the
    hook handles (remove them to undo)."""
    D = model.cfg["C"] // model.cfg["H"]
    handles = []
    for layer in sorted({l for l, _ in heads}):
        cols = [h for l, h in heads if l == layer]

        def zero(_module, args, cols=cols):
            x = args[0].clone()
            for h in cols:
                x[..., h * D:(h + 1) * D] = 0
            return (x,)
        handles.append(model.blocks[layer].attn.proj.register_forward_pre_hook(zero))
    return handles


@torch.no_grad()
def lens_probs(model64, ids):
    """softmax(LN_f(h_l) · tok_embᵀ) at the last position after every block l: [L, V]."""
    seen = []
    handles = [b.register_forward_hook(lambda _m, _a, out: seen.append(out[0][0, -1]))
               for b in model64.blocks]
    try:
        model64(torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    logits = torch.stack([model64.lm_head(model64.ln_f(h)) for h in seen])
    return torch.softmax(logits, dim=-1).numpy()


@torch.no_grad()
def deep_greedy(model64, prompt, steps):
    """The reference greedy loop (hop 1) keeping every layer's newest attention row
    [L][H][t] per step, and the lens for the first LENS_STEPS steps."""
    T = model64.cfg["T"]
    ids = list(prompt)
    tokens, rows, lens = [], [], []
    for i in range(steps):
        window = ids[-T:]
        logits, attn = run_window(model64, window)
        rows.append([a[:, -1, :] for a in attn])
        if i < LENS_STEPS:
            lens.append(lens_probs(model64, window))
            final = torch.softmax(torch.tensor(logits[-1]), dim=-1).numpy()
            if np.abs(lens[-1][-1] - final).max() > 1e-12:
                raise AssertionError("the last layer's lens is not the model's distribution")
        tokens.append(int(np.argmax(logits[-1])))
        ids.append(tokens[-1])
    return tokens, rows, lens


@torch.no_grad()
def score_window(model64, ids):
    """Per position i >= 1 of the window: log p(ids[i]) and the entropy of the
    distribution after ids[:i], temperature 1."""
    logp = torch.log_softmax(model64(torch.tensor([ids]))[0], dim=-1).numpy()
    logprobs = [float(logp[i - 1][ids[i]]) for i in range(1, len(ids))]
    entropy = [float(-(np.exp(lp) * np.maximum(lp, math.log(1e-12))).sum()) for lp in logp[:-1]]
    return logprobs, entropy


def make_deep_golden(fixture):
    """testdata/golden/{name}_deep.json: every layer's attention rows, the logit lens,
    an ablated greedy run that differs from the plain one, and one-pass scores with
    those heads ablated; from the checkpoint as stored."""
    name, cfg = fixture["name"], fixture["cfg"]
    model_rel = f"testdata/models/{name}.pt"
    model32, ckpt = niels_gpt.load_checkpoint(os.path.join(REPO, model_rel), torch.float32)
    model64, _ = niels_gpt.load_checkpoint(os.path.join(REPO, model_rel), torch.float64)
    state = ckpt["model_state"]
    prompt = list(GREEDY_PROMPT.encode("utf-8"))
    tokens, rows, lens = deep_greedy(model64, prompt, GREEDY_STEPS)

    # The NumPy reference agrees on the lens and on ablation (one window, every head).
    window = (prompt + tokens)[-cfg["T"]:]
    ref_lens = []
    numpy_forward(state, ckpt["model_cfg"], window, lens=ref_lens)
    ref = np.array([layer[-1] for layer in ref_lens])
    ref = np.exp(ref - ref.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    err = np.abs(lens_probs(model64, window) - ref).max()
    if err > 1e-9:
        raise AssertionError(f"{name}: PyTorch and NumPy lens differ by {err}")

    chosen = None
    for heads in ABLATIONS:
        heads = [(l, h) for l, h in heads if l < cfg["L"] and h < cfg["H"]]
        handles = ablate_heads(model64, heads) + ablate_heads(model32, heads)
        try:
            ref_logits, _ = numpy_forward(state, ckpt["model_cfg"], window, ablate=set(heads))
            err = np.abs(run_window(model64, window)[0] - ref_logits).max()
            if err > 1e-9:
                raise AssertionError(f"{name}: PyTorch and NumPy ablation differ by {err}")
            ablated, _, _, gap = greedy_reference(model64, model32, prompt, GREEDY_STEPS, 0)
            text = niels_gpt.format_transcript(PREFILL_MESSAGES).encode("utf-8")
            logprobs, entropy = score_window(model64, list(text[-cfg["T"]:]))
        finally:
            for handle in handles:
                handle.remove()
        differs = [i for i, (a, b) in enumerate(zip(ablated, tokens)) if a != b]
        print(f"{name}: ablating {heads}: min gap {gap:.4f}, "
              f"{len(differs)} of {GREEDY_STEPS} tokens differ")
        if gap >= MIN_GAP and differs:
            chosen = {"heads": [list(h) for h in heads], "tokens": ablated,
                      "min_top2_gap": float(np.float32(gap)), "first_difference": differs[0]}
            score = {"text": list(text), "offset": len(text) - cfg["T"], "ablate": [list(h) for h in heads],
                     "logprobs": to_f32(logprobs), "entropy": to_f32(entropy)}
            break
    if chosen is None:
        raise SystemExit(f"{name}: no ablation in ABLATIONS changes the greedy tokens without a near-tie")

    golden = {
        "model": model_rel,
        "config": {k: ckpt["model_cfg"][k] for k in ("V", "T", "C", "L", "H", "d_ff", "rope_theta")},
        "prompt": prompt,
        "steps": GREEDY_STEPS,
        "tokens": tokens,
        "layer_rows": [[to_f32(layer) for layer in step] for step in rows],
        "lens_steps": LENS_STEPS,
        "lens": [to_f32(step) for step in lens],
        "ablated": chosen,
        "score": score,
    }
    write_golden(f"{name}_deep.json", golden)


def pick_seed(fixture):
    """The first seed from fixture["seed"] whose greedy run has no near-ties and enough
    variety. Searching (rather than hard-coding a lucky seed) keeps the fixtures valid
    should PyTorch's random stream ever change; the chosen seed is recorded."""
    prompt = GREEDY_PROMPT.encode("utf-8")
    for seed in range(fixture["seed"], fixture["seed"] + MAX_SEED_TRIES):
        model32 = random_model(fixture["cfg"], seed)
        model64 = niels_gpt.NielsGPT(model32.cfg).double().eval()
        model64.load_state_dict(model32.state_dict())
        tokens, _, _, gap = greedy_reference(model64, model32, prompt, GREEDY_STEPS,
                                             fixture["trace_layer"])
        if gap >= MIN_GAP and len(set(tokens)) >= MIN_DISTINCT:
            print(f"{fixture['name']}: seed {seed}: min greedy gap {gap:.4f}, "
                  f"{len(set(tokens))} distinct tokens")
            return seed, model32
    raise SystemExit(f"{fixture['name']}: no seed in {MAX_SEED_TRIES} tries meets the gap "
                     f"and variety requirements; rescale the weights")


def to_f32(x):
    """float64 numbers -> nested lists of float32-rounded Python floats."""
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64).tolist()


def write_golden(filename, golden):
    """Write testdata/golden/{filename} with dump_json, read it back (the hand-rolled
    writer must produce valid JSON), and keep it under 3 MB."""
    path = os.path.join(REPO, "testdata", "golden", filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dump_json(golden) + "\n")
    with open(path, encoding="utf-8") as f:
        json.load(f)
    size = os.path.getsize(path)
    print(f"wrote testdata/golden/{filename} ({size} bytes)")
    if size > 3_000_000:
        raise AssertionError(f"{path} is {size} bytes; keep goldens under 3 MB")


def dump_json(value, indent=0):
    """JSON with floats written as '%.9g' of their float32 value (exact round trip to
    float32, about half the size of repr of a float64), one row per line at depth <= 2
    so the file stays readable in a diff."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("non-finite value in golden")
        return format(value, ".9g")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    pad = "\n" + "  " * (indent + 1)
    if isinstance(value, dict):
        items = [f"{json.dumps(k)}: {dump_json(v, indent + 1)}" for k, v in value.items()]
        return "{" + pad + ("," + pad).join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        parts = [dump_json(v, indent + 1) for v in value]
        nested = any(isinstance(v, list) for v in value)
        if nested and indent < 3:
            return "[" + pad + ("," + pad).join(parts) + "\n" + "  " * indent + "]"
        return "[" + ",".join(parts) + "]"
    raise TypeError(type(value))


def make_fixture(fixture):
    name, cfg = fixture["name"], fixture["cfg"]
    seed, model32 = pick_seed(fixture)

    model_rel = f"testdata/models/{name}.pt"
    model_path = os.path.join(REPO, model_rel)
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    opt_state = optimizer_state_for(model32, seed) if fixture.get("with_optimizer_state") else None
    niels_gpt.save_checkpoint(model_path, model32, model32.cfg,
                              train_cfg={"note": "random fixture weights", "seed": seed},
                              step=0, best_val_loss=fixture.get("best_val_loss"),
                              optimizer_state=opt_state)

    # Everything below reads the file back, so the goldens describe what is stored.
    model32, ckpt = niels_gpt.load_checkpoint(model_path, torch.float32)
    model64, _ = niels_gpt.load_checkpoint(model_path, torch.float64)
    state = ckpt["model_state"]
    if state["lm_head.weight"].data_ptr() != state["tok_emb.weight"].data_ptr():
        raise AssertionError("lm_head.weight does not share tok_emb.weight's storage in the file")

    T, trace_layer = cfg["T"], fixture["trace_layer"]
    transcript = niels_gpt.format_transcript(PREFILL_MESSAGES).encode("utf-8")
    if len(transcript) < T:
        raise AssertionError(f"prefill transcript of {len(transcript)} bytes is shorter than T={T}")
    prefill = list(transcript[-T:])
    logits, attn = run_window(model64, prefill)
    ref_logits, ref_attn = numpy_forward(state, ckpt["model_cfg"], prefill)
    err = max(np.abs(logits - ref_logits).max(), np.abs(np.array(attn) - np.array(ref_attn)).max())
    if err > 1e-9:
        raise AssertionError(f"{name}: PyTorch and NumPy references differ by {err}")
    if not all(np.all(np.triu(a, 1) == 0) for layer in attn for a in layer):
        raise AssertionError("masked attention probabilities must be exactly 0")

    prompt = list(GREEDY_PROMPT.encode("utf-8"))
    tokens, step_logits, attn_rows, gap = greedy_reference(model64, model32, prompt,
                                                           GREEDY_STEPS, trace_layer)
    if gap < MIN_GAP:
        raise AssertionError(f"{name}: greedy near-tie (gap {gap}) after reloading")

    golden = {
        "model": model_rel,
        "seed": seed,
        "config": {k: ckpt["model_cfg"][k] for k in ("V", "T", "C", "L", "H", "d_ff", "rope_theta")},
        "prefill": {
            "tokens": prefill,
            "logits": to_f32(logits),
            "attn": to_f32(attn),
        },
        "greedy": {
            "prompt": prompt,
            "steps": GREEDY_STEPS,
            "min_top2_gap": float(np.float32(gap)),
            "tokens": tokens,
            "logits": to_f32(step_logits),
            "trace_layer": trace_layer,
            "attn_rows": [to_f32(rows) for rows in attn_rows],
        },
    }
    print(f"wrote {model_rel} ({os.path.getsize(model_path)} bytes); greedy text: "
          f"{bytes(tokens).decode('utf-8', errors='replace')!r}")
    write_golden(f"{name}.json", golden)


def make_hop_golden(fixture):
    """testdata/golden/{name}_hop.json: greedy generations under window_hop > 1, long
    enough to jump the window several times, from the checkpoint as stored (so the
    existing goldens and models are read, never rewritten, by this part)."""
    name, T = fixture["name"], fixture["cfg"]["T"]
    model_rel = f"testdata/models/{name}.pt"
    model32, ckpt = niels_gpt.load_checkpoint(os.path.join(REPO, model_rel), torch.float32)
    model64, _ = niels_gpt.load_checkpoint(os.path.join(REPO, model_rel), torch.float64)
    prompt = list(GREEDY_PROMPT.encode("utf-8"))
    runs = []
    for hop in fixture["hops"]:
        tokens, _, attn_rows, gap = greedy_reference(model64, model32, prompt, HOP_STEPS,
                                                     fixture["trace_layer"], hop)
        if gap < MIN_GAP:
            raise AssertionError(f"{name} hop {hop}: greedy near-tie (gap {gap}); pick another hop")
        jumps = (len(prompt) + HOP_STEPS - T + hop - 1) // hop
        print(f"{name}: hop {hop}: {HOP_STEPS} steps, ~{jumps} window jumps, min gap {gap:.4f}, "
              f"{len(set(tokens))} distinct tokens")
        runs.append({
            "window_hop": hop,
            "min_top2_gap": float(np.float32(gap)),
            "tokens": tokens,
            "attn_rows": [to_f32(rows) for rows in attn_rows],
        })
    golden = {
        "model": model_rel,
        "config": {k: ckpt["model_cfg"][k] for k in ("V", "T", "C", "L", "H", "d_ff", "rope_theta")},
        "prompt": prompt,
        "steps": HOP_STEPS,
        "trace_layer": fixture["trace_layer"],
        "runs": runs,
    }
    write_golden(f"{name}_hop.json", golden)


def main():
    torch.set_num_threads(1)  # deterministic reductions, and the CPUs are shared
    hop_only = "--hop-only" in sys.argv[1:]
    deep_only = "--deep-only" in sys.argv[1:]
    for fixture in FIXTURES:
        if not hop_only and not deep_only:
            make_fixture(fixture)
        if not deep_only:
            make_hop_golden(fixture)
        if not hop_only:
            make_deep_golden(fixture)


if __name__ == "__main__":
    main()
