"""Trains the small demo niels-gpt (generation 1) that the binary embeds for `--model demo`.

Run from the repository root (this is what `make demo` does):

    nice -n 10 /usr/bin/python3 scripts/train_demo.py [--data ../shared/data] [--out models/demo/best.pt]

It reads the primer transcripts (primer.txt and primer.generated.txt: chat transcripts
separated by `<dialogue>` lines), trains a byte-level model with PyTorch on the CPU,
keeps the checkpoint with the best validation loss in exactly the `best.pt`
format, prints sample replies and writes models/demo/TRAINING.md next to it.

It is sized to finish in well under 30 minutes on two shared CPU cores (about 6 minutes
when they are idle): the data is ~85 KB of transcripts that share one system line, ~14 KB
of distinct text, so a ~0.8M-parameter model learns the voice and anything bigger would
only memorise faster.
"""

import argparse
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import niels_gpt  # noqa: E402  (path set up just above)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_FILES = ("primer.txt", "primer.generated.txt")


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

def read_transcripts(data_dir):
    """Returns the distinct transcripts of the primer files, in file order."""
    transcripts = []
    seen = set()
    found = 0
    for name in DATA_FILES:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            continue
        found += 1
        with open(path, encoding="utf-8") as f:
            chunk = []
            for line in f.read().split("\n") + ["<dialogue>"]:
                if line.strip() == "<dialogue>":
                    text = "\n".join(chunk).strip()
                    # Exact duplicates would leak between the train and validation splits.
                    if text and text not in seen:
                        seen.add(text)
                        transcripts.append(text)
                    chunk = []
                else:
                    chunk.append(line)
    if not found:
        sys.exit(f"no primer files ({', '.join(DATA_FILES)}) in {data_dir}: pass --data")
    return transcripts


def to_stream(transcripts):
    """Joins transcripts with a newline, so every reply is followed by "\\nsystem: ":
    the model learns to end its turn with a stop tag, which is what ends generation.
    Returns the byte stream and the offset of each transcript's closing newline."""
    data, ends = bytearray(), []
    for text in transcripts:
        data += text.encode("utf-8")
        ends.append(len(data))
        data += b"\n"
    return torch.tensor(list(data), dtype=torch.long), ends


def random_batch(stream, ends, batch, T, gen, aligned_frac):
    """Windows of T+1 bytes. Most start at random offsets, because the server re-cuts
    the window every step: the model must cope with a window that begins anywhere, e.g.
    half-way through the system line. The rest end just past a reply (its closing
    "\\nsystem: " stop tag included): ~75% of every transcript is the same system line,
    which the model learns in a few steps, so these windows put the training on the
    questions and replies, the part that carries the voice."""
    n_aligned = int(round(batch * aligned_frac))
    starts = torch.randint(0, len(stream) - T - 1, (batch - n_aligned,), generator=gen).tolist()
    for _ in range(n_aligned):
        end = ends[int(torch.randint(0, len(ends), (1,), generator=gen))]
        end += int(torch.randint(1, 12, (1,), generator=gen))       # into "\nsystem: "
        starts.append(min(max(0, end - T - 1), len(stream) - T - 1))
    x = torch.stack([stream[s:s + T + 1] for s in starts])
    return x[:, :-1], x[:, 1:]


# ---------------------------------------------------------------------------------------
# Faster CPU kernels for training only
# ---------------------------------------------------------------------------------------
# Debian's python3-torch links the reference BLAS: Linear runs at ~4 GFLOPS and batched
# matmul at ~1 GFLOPS on this machine, while oneDNN convolutions (also linked) reach
# ~15. Both products are rewritten as 1x1 convolutions. The maths and the state dict are
# unchanged; check_fast_kernels() verifies that against the plain model before training.

def conv_linear(x, weight, bias):
    """F.linear(x, weight, bias) as a 1x1 convolution: x [..., in] -> [..., out]."""
    shape = x.shape
    flat = x.reshape(-1, shape[-1]).t().unsqueeze(0)                  # [1, in, N]
    y = F.conv1d(flat, weight.unsqueeze(-1), bias)                    # [1, out, N]
    return y.squeeze(0).t().reshape(*shape[:-1], weight.shape[0])


def conv_matmul(a, b):
    """torch.matmul(a, b) for a [..., n, k], b [..., k, m] as one grouped 1x1 convolution:
    each batch entry is a group, the contracted axis k is the channel axis."""
    batch = a.shape[:-2]
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    G = math.prod(batch)
    inp = a.reshape(G, n, k).transpose(1, 2).reshape(1, G * k, n)     # [1, G*k, n]
    weight = b.reshape(G, k, m).transpose(1, 2).reshape(G * m, k, 1)  # [G*m, k, 1]
    out = F.conv1d(inp, weight, groups=G)                             # [1, G*m, n]
    return out.view(G, m, n).transpose(1, 2).reshape(*batch, n, m)


def use_fast_kernels(model):
    for module in model.modules():
        if isinstance(module, nn.Linear):
            # Bound per instance so the tied lm_head keeps reading tok_emb's Parameter.
            module.forward = (lambda m: lambda x: conv_linear(x, m.weight, m.bias))(module)
    niels_gpt.Attention.matmul = staticmethod(conv_matmul)


def check_fast_kernels(model, T):
    x = torch.randint(0, 256, (2, T))
    model.eval()
    with torch.no_grad():
        saved = niels_gpt.Attention.matmul
        plain = niels_gpt.NielsGPT(model.cfg)
        plain.load_state_dict(model.state_dict())
        niels_gpt.Attention.matmul = staticmethod(torch.matmul)
        want = plain.eval()(x)
        niels_gpt.Attention.matmul = staticmethod(saved)
        got = model(x)
    err = (got - want).abs().max().item()
    if err > 1e-3:
        sys.exit(f"fast kernels disagree with the reference model by {err}")
    model.train()


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------

def init_weights(model, L):
    """GPT-2 style: N(0, 0.02), residual projections scaled down by sqrt(2L) so the
    residual stream does not grow with depth; LayerNorm at (1, 0)."""
    for name, p in model.named_parameters():
        if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name == "ln_f.weight":
            nn.init.ones_(p)
        elif p.dim() == 1:
            nn.init.zeros_(p)
        elif name.endswith("attn.proj.weight") or name.endswith("mlp.fc2.weight"):
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * L))
        else:
            nn.init.normal_(p, 0.0, 0.02)


@torch.no_grad()
def evaluate(model, stream, T, batch, max_windows=None):
    """Mean loss over consecutive, non-overlapping windows of the stream (the first
    max_windows of them: the train loss is only a progress report, not worth a full pass)."""
    model.eval()
    starts = list(range(0, len(stream) - T - 1, T))[:max_windows]
    total, count = 0.0, 0
    for i in range(0, len(starts), batch):
        x = torch.stack([stream[s:s + T + 1] for s in starts[i:i + batch]])
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                               reduction="sum")
        total += loss.item()
        count += x[:, 1:].numel()
    model.train()
    return total / count


def progress(step, elapsed_s, args):
    """How far training is, 0..1: by steps, or by wall time when the machine is slower
    than planned. The CPUs are shared, so a fixed step count could overrun the budget;
    letting the cosine follow whichever clock is further along still ends the run with a
    fully decayed learning rate, inside --max_minutes. On an idle machine the step clock
    leads and the run is the same every time."""
    return max(step / args.steps, elapsed_s / (60 * args.max_minutes))


def lr_at(step, frac, args):
    """Linear warmup over the first steps, then cosine decay to 10% of the peak."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = min(1.0, frac)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def sample_replies(model, system_line, questions, max_new_tokens):
    """Generates replies the way the server does (docs/API.md §8), greedy and sampled."""
    rows = []
    for q in questions:
        prompt = niels_gpt.format_transcript([("system", system_line), ("user", q)])
        ids = list(prompt.encode("utf-8"))
        for label, temperature, top_k in (("greedy", 0.0, None), ("t=0.9 top_k=50 seed=42", 0.9, 50)):
            out = niels_gpt.generate(model, ids, max_new_tokens, temperature=temperature,
                                     top_k=top_k, seed=42)
            text = bytes(ids + out).decode("utf-8", errors="replace")
            rows.append((q, label, niels_gpt.extract_reply(text)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"),
                    help="folder holding primer.txt / primer.generated.txt")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "demo", "best.pt"))
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--C", type=int, default=128)
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--d_ff", type=int, default=0, help="MLP width (default 4C)")
    # Dropout 0.2 and a short, fully decayed schedule: with ~14 KB of distinct text the
    # validation loss bottoms out after ~500 steps; lighter dropout reached a worse
    # minimum and replies that garbled words.
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--rope_theta", type=float, default=10000.0)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--weight_decay", type=float, default=0.1)
    ap.add_argument("--aligned_frac", type=float, default=0.5,
                    help="share of each batch's windows that end just after a reply")
    ap.add_argument("--eval_every", type=int, default=100)
    ap.add_argument("--val_frac", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample_tokens", type=int, default=100,
                    help="max new tokens per sample reply printed at the end")
    ap.add_argument("--max_minutes", type=float, default=24.0,
                    help="training wall-time budget: the schedule ends by then (see progress());"
                         " loading, evaluation at the end and samples add a minute or two")
    ap.add_argument("--no_fast_kernels", action="store_true",
                    help="use PyTorch's plain Linear/matmul (slow with the reference BLAS)")
    args = ap.parse_args()
    d_ff = args.d_ff or 4 * args.C

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.time()

    transcripts = read_transcripts(args.data)
    system_line = transcripts[0].split("\n")[0][len("system: "):]
    order = list(range(len(transcripts)))
    random.Random(args.seed).shuffle(order)
    n_val = max(1, int(len(order) * args.val_frac))
    val = [transcripts[i] for i in order[:n_val]]
    train = [transcripts[i] for i in order[n_val:]]
    (train_stream, train_ends), (val_stream, _) = to_stream(train), to_stream(val)
    print(f"{len(transcripts)} transcripts: {len(train)} train ({len(train_stream)} bytes), "
          f"{len(val)} val ({len(val_stream)} bytes)", flush=True)

    cfg = niels_gpt.make_config(V=256, T=args.T, C=args.C, L=args.L, H=args.H, d_ff=d_ff,
                                dropout=args.dropout, rope_theta=args.rope_theta)
    model = niels_gpt.NielsGPT(cfg)
    init_weights(model, args.L)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model_cfg {cfg}: {n_params} parameters", flush=True)
    if not args.no_fast_kernels:
        use_fast_kernels(model)
        check_fast_kernels(model, args.T)
    model.train()

    # No weight decay on biases, LayerNorm and (tied) embeddings: decaying the shared
    # embedding would also shrink the output logits.
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and n != "tok_emb.weight"]
    no_decay = [p for n, p in model.named_parameters() if p.dim() != 2 or n == "tok_emb.weight"]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))

    train_cfg = {"data": list(DATA_FILES), "steps": args.steps, "batch": args.batch,
                 "T": args.T, "aligned_frac": args.aligned_frac,
                 "lr": args.lr, "warmup": args.warmup, "schedule": "cosine to 0.1",
                 "weight_decay": args.weight_decay, "seed": args.seed,
                 "val_frac": args.val_frac, "optimizer": "AdamW(0.9, 0.95)"}
    gen = torch.Generator().manual_seed(args.seed)
    best_val, best_step, last_train, last_val = float("inf"), -1, float("nan"), float("nan")
    running = None
    t_train = time.time()
    step, done = 0, False
    while not done:
        lr = lr_at(step, progress(step, time.time() - t_train, args), args)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = random_batch(train_stream, train_ends, args.batch, args.T, gen, args.aligned_frac)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()

        step += 1
        # Decided once here, so the last step is always followed by an evaluation.
        done = progress(step, time.time() - t_train, args) >= 1.0
        if step % args.eval_every == 0 or done:
            last_train = evaluate(model, train_stream, args.T, 32, max_windows=64)
            last_val = evaluate(model, val_stream, args.T, 32)
            mark = ""
            if last_val < best_val:
                best_val, best_step = last_val, step
                os.makedirs(os.path.dirname(args.out), exist_ok=True)
                niels_gpt.save_checkpoint(args.out, model, cfg, train_cfg, step, best_val)
                mark = " (saved)"
            print(f"step {step}/{args.steps} lr {lr:.2e} "
                  f"train(ema) {running:.4f} train {last_train:.4f} val {last_val:.4f} "
                  f"{(time.time() - t_start) / 60:.1f} min{mark}", flush=True)
        elif step % 10 == 0:
            print(f"step {step} loss {running:.4f} {(time.time() - t_start) / 60:.1f} min",
                  flush=True)
    wall = time.time() - t_start

    # Samples come from the saved file, read back the way anyone else would read it.
    best, ckpt = niels_gpt.load_checkpoint(args.out)
    if not args.no_fast_kernels:
        use_fast_kernels(best)
    questions = ["tell me about niels", "who is niels?", "what's niels' email?",
                 "explain: attention.", "what is the meaning of life?"]
    rows = sample_replies(best, system_line, questions, args.sample_tokens)
    for q, label, reply in rows:
        print(f"[{label}] user: {q}\n    assistant: {reply}")

    size_mb = os.path.getsize(args.out) / 1e6
    kernels = ("" if args.no_fast_kernels else
               "; Linear and batched matmul ran as oneDNN 1x1 convolutions (see use_fast_kernels)")
    command = "nice -n 10 /usr/bin/python3 scripts/train_demo.py " + " ".join(sys.argv[1:])
    md = os.path.join(os.path.dirname(args.out), "TRAINING.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write("# Demo model: how it was trained\n\n")
        f.write("`best.pt` here is the model the binary embeds for `--model demo`. It is a tiny\n"
                "niels-gpt generation 1 trained on the primer transcripts (~85 KB), so it\n"
                "imitates the primer's voice and memorises its facts; it knows nothing else.\n"
                "Regenerate it with `make demo`; the run is seeded but CPU float\n"
                "arithmetic makes it reproducible only approximately.\n\n")
        f.write(f"- command: `{command.strip()}` (from the repository root)\n")
        f.write(f"- model_cfg: `{ckpt['model_cfg']}` ({n_params} parameters, {size_mb:.1f} MB file)\n")
        f.write(f"- data: {len(train)} train / {len(val)} validation transcripts "
                f"({len(train_stream)} / {len(val_stream)} bytes), random {args.T}-byte windows\n")
        f.write(f"- optimiser: AdamW lr {args.lr} (warmup {args.warmup}, cosine to 10% over "
                f"{args.steps} steps or {args.max_minutes} min, whichever comes first), "
                f"weight decay {args.weight_decay}, batch {args.batch}, grad clip 1.0\n")
        f.write(f"- steps: {step} of {args.steps}; best validation loss {best_val:.4f} "
                f"at step {best_step} (the saved checkpoint)\n")
        f.write(f"- final losses (nats/byte): train {last_train:.4f}, validation {last_val:.4f}\n")
        f.write(f"- wall time: {wall / 60:.1f} min on {args.threads} threads "
                f"(shared 2-core machine, nice 10){kernels}\n\n")
        f.write(f"## Sample replies (system line from the primer, max {args.sample_tokens} new tokens)\n\n")
        f.write("| user | decoding | reply |\n|---|---|---|\n")
        for q, label, reply in rows:
            cell = reply.replace("|", "\\|").replace("\n", " ")
            f.write(f"| {q} | {label} | {cell} |\n")
    print(f"wrote {args.out} and {md} in {wall / 60:.1f} min")


if __name__ == "__main__":
    main()
