"""Writes the tiny generation-2 fixture checkpoints and their goldens.

Run from the repository root (this is what `make fixtures-gen2` does; needs Debian's
python3-torch and python3-sentencepiece):

    /usr/bin/python3 scripts/make_fixtures_gen2.py

Outputs (committed; rerunning reproduces them on the same PyTorch and sentencepiece):
- testdata/models/tiny_gen2_{a,b}.pt: generation-2 `best.pt` files (scripts/niels_gpt2.py)
  with random weights, for testdata/spm/tiny.model (vocab 1,000), whose sha256 they record in
  train_cfg._settings_meta.tokenizer_sha256. tiny_gen2_a says its storages live on "cuda:0"
  and has step 1234 and best_val_loss None; tiny_gen2_b has a real AdamW optimizer_state, step
  None and best_val_loss 2.5. Both carry model_cfg._raw and train_cfg._raw.
- testdata/golden/tiny_gen2_{a,b}.json.gz (gzip, no timestamp): float64 goldens computed from
  the weights as stored:
  - "config", "tokenizer_sha256";
  - "chat": messages and the ids of their token-native transcript (generation prompt included);
  - "prefill": the transcript's last T ids, logits [T][V] and attention [L][H][T][T];
  - "greedy": GREEDY_STEPS steps from a short chat prompt with ids 3, 4, 5 banned, the window
    re-cut every step (the last T ids, positions from 0); per step the token, the ten best
    candidates [[id, logit], ...] of the logits it was chosen from, and the traced layer's
    newest attention row [H][t];
  - "greedy_penalty": the same (attention rows too) with repetition_penalty (every distinct id of the prompt and
    the generation so far has its logit divided by it, whatever its sign, after the ban);
  - "sampling": distributions of the whole pipeline (ban, penalty, temperature, top-k, top-p,
    softmax) for the prefill's last logits as stored in the golden: every id with probability
    > 0 as [id, p], and the entropy in nats.
  The greedy runs never choose end-of-turn (6), so they read the same whether generation stops
  there or not, and every greedy choice wins by at least MIN_GAP, so an engine right up to
  float32 rounding picks exactly these tokens.

The float64 PyTorch forward is checked against a plain NumPy implementation written from
docs/ARCHITECTURE.md, so a mistake in niels_gpt2.py cannot hide in both.
"""

import gzip
import hashlib
import math
import os
import sys

import numpy as np
import sentencepiece as spm
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures  # noqa: E402  (generation 1's JSON writer and float32 rounding)
import niels_gpt2  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(REPO, "testdata", "spm", "tiny.model")

FIXTURES = [
    {"name": "tiny_gen2_a", "seed": 3000, "trace_layer": 1, "step": 1234, "best_val_loss": None,
     "device_tag": "cuda:0",
     "cfg": dict(V=1000, T=64, C=32, L=2, H=2, d_ff=48, rope_theta=10000.0)},
    {"name": "tiny_gen2_b", "seed": 4000, "trace_layer": 2, "step": None, "best_val_loss": 2.5,
     "with_optimizer_state": True,
     "cfg": dict(V=1000, T=20, C=24, L=3, H=2, d_ff=40, rope_theta=500.0)},
]

PREFILL_MESSAGES = [
    ("system", "surly chatbot for niels' site. terse."),
    ("user", "hi — what's the café called? ünïcödé ok"),
    ("assistant", "Crème brûlée. Next question."),
    ("user", "why so  terse?\n tell me about the weather in São Paulo"),
]
GREEDY_MESSAGES = [("user", "hello there")]
GREEDY_STEPS = 80
REPETITION_PENALTY = 1.3
SAMPLING_CASES = [
    dict(temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.2),
    dict(temperature=1.0, top_k=None, top_p=0.5, repetition_penalty=1.0),
    dict(temperature=1.3, top_k=5, top_p=1.0, repetition_penalty=0.8),
]
TOP_CANDIDATES = 10
MIN_GAP = 1e-2
MIN_DISTINCT = 20
MAX_SEED_TRIES = 200
GAINS = {"emb": 1.2, "qkv": 1.5, "proj": 16.0, "fc_a": 1.0, "fc_g": 1.0, "fc_out": 16.0}


def random_model(cfg, seed):
    """A NielsGPT2 with random float32 weights from `seed`, scaled as generation 1's
    fixtures are (make_fixtures.random_model says why): large residual-branch gains so the
    blocks, not the tied embedding, decide the next token; norm weights random around 1 so
    a reader that ignores them is caught; biases non-zero so a reader that drops them is."""
    model = niels_gpt2.NielsGPT2(niels_gpt2.niels_gpt.make_config(**cfg))
    gen = torch.Generator().manual_seed(seed)

    def normal(p, std, mean=0.0):
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen) * std + mean)

    C, d_ff = cfg["C"], cfg["d_ff"]
    normal(model.tok_emb.weight, GAINS["emb"])
    for block in model.blocks:
        normal(block.ln1.weight, 0.1, 1.0)
        normal(block.ln2.weight, 0.1, 1.0)
        normal(block.attn.qkv.weight, GAINS["qkv"] / math.sqrt(C))
        normal(block.attn.proj.weight, GAINS["proj"] / math.sqrt(C))
        for name, fan_in in (("fc_a", C), ("fc_g", C), ("fc_out", d_ff)):
            linear = getattr(block.mlp, name)
            normal(linear.weight, GAINS[name] / math.sqrt(fan_in))
            normal(linear.bias, 0.1)
    normal(model.ln_f.weight, 0.1, 1.0)
    return model.eval()


def optimizer_state_for(model, seed):
    """A real AdamW state dict after one step on a throwaway copy."""
    copy = niels_gpt2.NielsGPT2(model.cfg)
    copy.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(copy.parameters(), lr=1e-3)
    x = torch.randint(0, model.cfg["V"], (1, 8), generator=torch.Generator().manual_seed(seed))
    copy(x).square().mean().backward()
    opt.step()
    return opt.state_dict()


# ---------------------------------------------------------------------------------------
# Independent NumPy float64 reference
# ---------------------------------------------------------------------------------------

def numpy_forward(state, cfg, ids):
    """Returns (logits [t, V], attn [L][H][t, t]) for ids at positions 0..t-1."""
    W = {k: v.detach().numpy().astype(np.float64) for k, v in state.items()}
    C, H, L = cfg["C"], cfg["H"], cfg["L"]
    D, t = C // H, len(ids)

    def rms_norm(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w

    def silu(x):
        return x / (1.0 + np.exp(-x))

    pos = np.arange(t)[:, None]
    angle = pos * cfg["rope_theta"] ** (-2.0 * np.arange(D // 2)[None, :] / D)  # [t, D/2]
    cos, sin = np.cos(angle), np.sin(angle)

    def rotate(x):  # x [t, D]: pairs (2i, 2i+1)
        a, b = x[:, 0::2], x[:, 1::2]
        out = np.empty_like(x)
        out[:, 0::2], out[:, 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    h = W["tok_emb.weight"][ids]
    all_attn = []
    for layer in range(L):
        p = f"blocks.{layer}."
        qkv = rms_norm(h, W[p + "ln1.weight"]) @ W[p + "attn.qkv.weight"].T
        heads, probs_l = [], []
        for hd in range(H):
            q = rotate(qkv[:, hd * D:(hd + 1) * D])
            k = rotate(qkv[:, C + hd * D:C + (hd + 1) * D])
            v = qkv[:, 2 * C + hd * D:2 * C + (hd + 1) * D]
            scores = q @ k.T / math.sqrt(D)
            scores[np.triu(np.ones((t, t), dtype=bool), 1)] = -np.inf
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            probs_l.append(probs)
            heads.append(probs @ v)
        all_attn.append(probs_l)
        h = h + np.concatenate(heads, axis=1) @ W[p + "attn.proj.weight"].T
        x = rms_norm(h, W[p + "ln2.weight"])
        gate = silu(x @ W[p + "mlp.fc_g.weight"].T + W[p + "mlp.fc_g.bias"])
        lin = x @ W[p + "mlp.fc_a.weight"].T + W[p + "mlp.fc_a.bias"]
        h = h + (gate * lin) @ W[p + "mlp.fc_out.weight"].T + W[p + "mlp.fc_out.bias"]
    return rms_norm(h, W["ln_f.weight"]) @ W["tok_emb.weight"].T, all_attn


# ---------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------

@torch.no_grad()
def run_window(model64, ids):
    logits, attn = model64(torch.tensor([ids]), return_attn=True)
    return logits[0].numpy(), [a[0].numpy() for a in attn]


def top_candidates(x):
    """The TOP_CANDIDATES best [id, value] of x, best first (ties: lower id first)."""
    order = np.lexsort((np.arange(len(x)), -x))[:TOP_CANDIDATES]
    return [[int(i), float(x[i])] for i in order]


@torch.no_grad()
def greedy_reference(model64, model32, prompt, steps, trace_layer, penalty=1.0):
    """The reference greedy loop: ban, penalty, argmax over the last T ids, positions from 0.
    Returns per-step tokens, candidates, attention rows and the smallest winning margin,
    and checks that the float32 model chooses the same token at every step."""
    T = model64.cfg["T"]
    ids = list(prompt)
    out = {"tokens": [], "top": [], "attn_rows": []}
    min_gap = float("inf")
    for _ in range(steps):
        window = ids[-T:]
        logits, attn = run_window(model64, window)
        x = niels_gpt2.process_logits(torch.from_numpy(logits[-1]), ids, penalty).numpy()
        top2 = np.sort(x)[-2:]
        min_gap = min(min_gap, float(top2[1] - top2[0]))
        token = int(np.argmax(x))
        raw32 = model32(torch.tensor([window]))[0, -1].double()
        token32 = int(torch.argmax(niels_gpt2.process_logits(raw32, ids, penalty)))
        if token32 != token:
            raise AssertionError(f"float32 picks {token32}, float64 picks {token}")
        out["tokens"].append(token)
        out["top"].append(top_candidates(x))
        out["attn_rows"].append(attn[trace_layer][:, -1, :])
        ids.append(token)
    return out, min_gap


def greedy_ok(run, gap):
    tokens = run["tokens"]
    return gap >= MIN_GAP and len(set(tokens)) >= MIN_DISTINCT and niels_gpt2.EOT_ID not in tokens


def pick_seed(fixture, prompt):
    """The first seed from fixture["seed"] whose greedy runs (plain and with the penalty)
    have no near-ties, enough variety and no end-of-turn."""
    for seed in range(fixture["seed"], fixture["seed"] + MAX_SEED_TRIES):
        model32 = random_model(fixture["cfg"], seed)
        model64 = niels_gpt2.NielsGPT2(model32.cfg).double().eval()
        model64.load_state_dict(model32.state_dict())
        runs = [greedy_reference(model64, model32, prompt, GREEDY_STEPS, fixture["trace_layer"], p)
                for p in (1.0, REPETITION_PENALTY)]
        if all(greedy_ok(run, gap) for run, gap in runs):
            print(f"{fixture['name']}: seed {seed}: min greedy gaps "
                  f"{runs[0][1]:.4f} / {runs[1][1]:.4f}")
            return seed, model32
    raise SystemExit(f"{fixture['name']}: no seed in {MAX_SEED_TRIES} tries meets the requirements")


def sampling_goldens(logits_f32, history):
    """The pipeline's distribution for each case, from the float32-rounded logits that the
    golden stores (so a Go test feeds exactly these numbers)."""
    x = torch.tensor(logits_f32, dtype=torch.float64)
    cases = []
    for case in SAMPLING_CASES:
        p = niels_gpt2.sampling_distribution(x, history, **case).numpy()
        entropy = float(-(p * np.log(np.maximum(p, 1e-12))).sum())
        kept = [[int(i), float(p[i])] for i in np.lexsort((np.arange(len(p)), -p)) if p[i] > 0]
        cases.append({**case, "history": "prefill.tokens", "probs": kept, "entropy": entropy})
    return cases


def check_prefill(name, model64, ckpt, prefill):
    logits, attn = run_window(model64, prefill)
    ref_logits, ref_attn = numpy_forward(ckpt["model_state"], model64.cfg, prefill)
    err = max(np.abs(logits - ref_logits).max(), np.abs(np.array(attn) - np.array(ref_attn)).max())
    if err > 1e-9:
        raise AssertionError(f"{name}: PyTorch and NumPy references differ by {err}")
    if not all(np.all(np.triu(a, 1) == 0) for layer in attn for a in layer):
        raise AssertionError("masked attention probabilities must be exactly 0")
    return logits, attn


def write_checkpoint(fixture, model32, seed, tok_sha):
    rel = f"testdata/models/{fixture['name']}.pt"
    path = os.path.join(REPO, rel)
    opt_state = optimizer_state_for(model32, seed) if fixture.get("with_optimizer_state") else None
    niels_gpt2.save_checkpoint(path, model32, tok_sha,
                               train_cfg={"note": "random fixture weights", "seed": seed},
                               step=fixture["step"], best_val_loss=fixture["best_val_loss"],
                               optimizer_state=opt_state, device_tag=fixture.get("device_tag"))
    return rel, path


def make_fixture(fixture, sp, tok_sha):
    name, cfg = fixture["name"], fixture["cfg"]
    prompt = niels_gpt2.format_ids(GREEDY_MESSAGES, sp.encode)
    seed, model32 = pick_seed(fixture, prompt)
    model_rel, model_path = write_checkpoint(fixture, model32, seed, tok_sha)

    # Everything below reads the file back, so the goldens describe what is stored.
    model32, ckpt = niels_gpt2.load_checkpoint(model_path, torch.float32)
    model64, _ = niels_gpt2.load_checkpoint(model_path, torch.float64)
    T, trace_layer = cfg["T"], fixture["trace_layer"]
    chat_ids = niels_gpt2.format_ids(PREFILL_MESSAGES, sp.encode)
    if len(chat_ids) < T:
        raise AssertionError(f"prefill transcript of {len(chat_ids)} ids is shorter than T={T}")
    prefill = chat_ids[-T:]
    logits, attn = check_prefill(name, model64, ckpt, prefill)

    runs = {}
    for key, penalty in (("greedy", 1.0), ("greedy_penalty", REPETITION_PENALTY)):
        run, gap = greedy_reference(model64, model32, prompt, GREEDY_STEPS, trace_layer, penalty)
        if not greedy_ok(run, gap):
            raise AssertionError(f"{name}: {key} no longer meets the requirements after reloading")
        runs[key] = {"prompt": prompt, "steps": GREEDY_STEPS, "repetition_penalty": penalty,
                     "banned": list(niels_gpt2.BANNED_IDS), "min_top2_gap": float(np.float32(gap)),
                     "tokens": run["tokens"], "top": run["top"], "trace_layer": trace_layer,
                     "attn_rows": [make_fixtures.to_f32(r) for r in run["attn_rows"]]}

    last_f32 = make_fixtures.to_f32(logits[-1])
    golden = {
        "model": model_rel,
        "tokenizer": "testdata/spm/tiny.model",
        "tokenizer_sha256": tok_sha,
        "seed": seed,
        "config": {k: ckpt["model_cfg"][k] for k in ("V", "T", "C", "L", "H", "d_ff", "rope_theta")},
        "chat": {"messages": [list(m) for m in PREFILL_MESSAGES], "ids": chat_ids},
        "prefill": {"tokens": prefill, "logits": make_fixtures.to_f32(logits), "attn": make_fixtures.to_f32(attn)},
        **runs,
        "sampling": sampling_goldens(last_f32, prefill),
    }
    write_golden(name, golden, model_path, sp, runs)


def write_golden(name, golden, model_path, sp, runs):
    text = make_fixtures.dump_json(golden) + "\n"
    path = os.path.join(REPO, "testdata", "golden", f"{name}.json.gz")
    with open(path, "wb") as f:
        # mtime 0 and no file name: the same goldens give the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
            gz.write(text.encode("utf-8"))
    size = os.path.getsize(path)
    print(f"wrote {golden['model']} ({os.path.getsize(model_path)} bytes) and "
          f"testdata/golden/{name}.json.gz ({size} bytes); greedy text: "
          f"{sp.decode(runs['greedy']['tokens'])!r}")
    if size > 1_500_000:
        raise AssertionError(f"{path} is {size} bytes; keep goldens small")


def main():
    torch.set_num_threads(1)  # deterministic reductions, and the CPUs are shared
    with open(TOKENIZER, "rb") as f:
        tok_sha = hashlib.sha256(f.read()).hexdigest()
    sp = spm.SentencePieceProcessor(model_file=TOKENIZER)
    for fixture in FIXTURES:
        if fixture["cfg"]["V"] != sp.get_piece_size():
            raise AssertionError("fixture V must be the tokenizer's vocabulary size")
        make_fixture(fixture, sp, tok_sha)


if __name__ == "__main__":
    main()
