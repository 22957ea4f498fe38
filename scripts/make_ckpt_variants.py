"""Writes small checkpoint-format variants for the Go converter's tests (convert/testdata/).

Run with Debian's python3 (it has python3-torch): /usr/bin/python3 scripts/make_ckpt_variants.py

The real fixtures in shared/fixtures cover what PyTorch 2.x writes; these cover the other
shapes a `best.pt` can take (half precision, bfloat16, the pre-1.6 "legacy" stream format,
pickle protocol 4, tensors that are views into a shared storage at an offset or with
non-contiguous strides, a torch.compile `_orig_mod.` prefix) and files the reader must
refuse (a global it does not know, a wrong shape, untied output weights, float64 weights).
Dimensions are tiny (C=8) so the committed files stay small. Expected values are computed
here by torch itself and written to expected.json, so the Go tests compare against the
library that wrote the file rather than against our own reader.

The script also writes seed inputs for the FuzzReadCheckpoint fuzzer (testdata/fuzz/...),
in Go's corpus file format, from an even smaller model.
"""

import collections
import io
import json
import os
import pathlib

import numpy
import torch
import torch.nn as nn

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "convert" / "testdata"
FUZZ = OUT / "fuzz" / "FuzzReadCheckpoint"

CFG = {"V": 256, "T": 8, "C": 8, "L": 2, "H": 2, "d_ff": 16, "dropout": 0.1, "rope_theta": 10000.0}
FUZZ_CFG = {"V": 256, "T": 4, "C": 2, "L": 1, "H": 1, "d_ff": 4, "dropout": 0.0, "rope_theta": 500.0}


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, d_ff = cfg["C"], cfg["d_ff"]
        self.ln1 = nn.LayerNorm(C)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(C, 3 * C, bias=False)
        self.attn.proj = nn.Linear(C, C, bias=False)
        self.ln2 = nn.LayerNorm(C)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(C, d_ff)
        self.mlp.fc2 = nn.Linear(d_ff, C)


class Tiny(nn.Module):
    """Only the parameter layout of niels-gpt generation 1 (no forward pass is needed)."""

    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["V"], cfg["C"])
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg["L"]))
        self.ln_f = nn.LayerNorm(cfg["C"])
        self.lm_head = nn.Linear(cfg["C"], cfg["V"], bias=False)
        # Tied, as in the real model: two state-dict keys, one storage.
        self.lm_head.weight = self.tok_emb.weight


def make_model(cfg, seed):
    torch.manual_seed(seed)
    model = Tiny(cfg)
    with torch.no_grad():
        # LayerNorm starts at exactly 1 and 0; random values catch a swapped weight/bias.
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model


def checkpoint(cfg, state, step=7, best_val_loss=2.25, **extra):
    ck = {"model_cfg": dict(cfg), "train_cfg": {"seed": 1, "lr": 3e-4, "B": 4},
          "model_state": state, "step": step}
    if best_val_loss is not None:
        ck["best_val_loss"] = best_val_loss
    ck.update(extra)
    return ck


def expected_of(ck):
    """What the Go reader must produce: float32 values summed in float64, per tensor."""
    state = ck["model_state"]
    tensors = {}
    for name, t in state.items():
        name = name.removeprefix("_orig_mod.")
        v = t.detach().to(torch.float32).to(torch.float64).contiguous()
        flat = v.reshape(-1)
        tensors[name] = {"shape": list(t.shape), "sum": flat.sum().item(),
                         "abs_sum": flat.abs().sum().item(),
                         "first": flat[0].item(), "last": flat[-1].item()}
    bvl = ck.get("best_val_loss")
    return {"config": {k: ck["model_cfg"][k] for k in ("V", "T", "C", "L", "H", "d_ff")},
            "dropout": ck["model_cfg"]["dropout"], "rope_theta": ck["model_cfg"]["rope_theta"],
            "step": int(ck["step"]),
            "best_val_loss": None if bvl is None else float(bvl),
            "tensors": tensors}


class Owned:
    """Pickles as a call to os.system: what a hostile best.pt would carry.

    Saving does not run it; only an unpickler that executes globals would.
    """

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def with_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = sum((p * p).sum() for p in model.parameters())
    loss.backward()
    opt.step()
    return opt.state_dict()


def shared_view_state(cfg, base):
    """tok_emb/lm_head as a view at offset 5 into a larger flat storage, and fc1.weight
    as the transpose of a contiguous [C, d_ff] tensor (strides (1, d_ff))."""
    state = collections.OrderedDict()
    V, C = cfg["V"], cfg["C"]
    flat = torch.randn(5 + V * C + 3)
    emb = flat[5:5 + V * C].view(V, C)
    emb.copy_(base["tok_emb.weight"])
    for name, t in base.items():
        if name in ("tok_emb.weight", "lm_head.weight"):
            state[name] = emb
        elif name.endswith("mlp.fc1.weight"):
            tt = t.t().contiguous().t()
            assert not tt.is_contiguous()
            state[name] = tt
        else:
            state[name] = t
    return state


def save(name, ck, **kw):
    torch.save(ck, OUT / name, **kw)
    return name


def go_corpus_entry(data: bytes) -> str:
    """One `[]byte("...")` line in Go's fuzz corpus format (a Go string literal)."""
    out = []
    for b in data:
        c = chr(b)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif 0x20 <= b < 0x7f:
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return "go test fuzz v1\n[]byte(\"" + "".join(out) + "\")\n"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    FUZZ.mkdir(parents=True, exist_ok=True)
    expected = {}

    model = make_model(CFG, seed=1)
    state = model.state_dict()
    opt_state = with_optimizer(model)

    ck = checkpoint(CFG, state, optimizer_state=opt_state)
    expected[save("tiny_f32.pt", ck)] = expected_of(ck)

    half = collections.OrderedDict((k, v.half()) for k, v in state.items())
    half["lm_head.weight"] = half["tok_emb.weight"]
    # numpy scalars end up in real checkpoints when a loss is taken from numpy.
    ck = checkpoint(CFG, half, step=numpy.int64(123), best_val_loss=numpy.float64(1.75))
    expected[save("tiny_f16.pt", ck)] = expected_of(ck)

    bf = collections.OrderedDict((k, v.bfloat16()) for k, v in state.items())
    bf["lm_head.weight"] = bf["tok_emb.weight"]
    ck = checkpoint(CFG, bf, best_val_loss=None)
    expected[save("tiny_bf16.pt", ck)] = expected_of(ck)

    ck = checkpoint(CFG, shared_view_state(CFG, state))
    expected[save("tiny_legacy.pt", ck, _use_new_zipfile_serialization=False)] = expected_of(ck)
    expected[save("tiny_shared_view.pt", ck)] = expected_of(ck)

    ck = checkpoint(CFG, state, step=2**40)
    expected[save("tiny_proto4.pt", ck, pickle_protocol=4)] = expected_of(ck)

    prefixed = collections.OrderedDict(("_orig_mod." + k, v) for k, v in state.items())
    ck = checkpoint(CFG, prefixed)
    expected[save("tiny_orig_mod.pt", ck)] = expected_of(ck)

    # Files the reader or the validator must refuse, from the smallest valid model.
    fmodel = make_model(FUZZ_CFG, seed=2)
    fstate = fmodel.state_dict()
    ck = checkpoint(FUZZ_CFG, fstate)
    ck["train_cfg"]["callback"] = Owned()
    save("bad_global.pt", ck)

    bad = collections.OrderedDict(fstate)
    bad["blocks.0.mlp.fc1.weight"] = torch.zeros(FUZZ_CFG["d_ff"], FUZZ_CFG["C"] + 1)
    save("bad_shape.pt", checkpoint(FUZZ_CFG, bad))

    untied = collections.OrderedDict(fstate)
    untied["lm_head.weight"] = fstate["tok_emb.weight"].clone() + 1
    save("bad_untied.pt", checkpoint(FUZZ_CFG, untied))

    dbl = collections.OrderedDict((k, v.double()) for k, v in fstate.items())
    save("bad_f64.pt", checkpoint(FUZZ_CFG, dbl))

    with open(OUT / "expected.json", "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")

    # Fuzz seeds: the legacy stream has no CRCs, so mutations reach the unpickler.
    for name, kw in (("tiny_zip", {}), ("tiny_legacy", {"_use_new_zipfile_serialization": False}),
                     ("tiny_proto4_legacy", {"_use_new_zipfile_serialization": False,
                                             "pickle_protocol": 4})):
        buf = io.BytesIO()
        torch.save(checkpoint(FUZZ_CFG, fmodel.state_dict()), buf, **kw)
        (FUZZ / name).write_text(go_corpus_entry(buf.getvalue()))
    buf = io.BytesIO()
    ck = checkpoint(FUZZ_CFG, fstate)
    ck["train_cfg"]["callback"] = Owned()
    torch.save(ck, buf, _use_new_zipfile_serialization=False)
    (FUZZ / "bad_global_legacy").write_text(go_corpus_entry(buf.getvalue()))


if __name__ == "__main__":
    main()
