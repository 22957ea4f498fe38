"""niels-gpt generation 2 in PyTorch: the reference model for the generation-2 fixtures.

Imported by scripts/make_fixtures_gen2.py; not run on its own. Written from docs/ARCHITECTURE.md
(generation 2: RMSNorm without bias, a SwiGLU MLP with biases, a SentencePiece vocabulary,
token-native chat) so that its checkpoints are what today's niels-gpt training code saves and
what the Go converter reads, and its outputs can serve as goldens for the engine. PyTorch is a
tool here, never a runtime dependency of the server.

Everything generation 2 shares with generation 1 (rotary embedding, attention, the block's
residual wiring, the tied lm_head, the forward pass) is generation 1's code in niels_gpt.py,
imported rather than copied: only the norms and the MLP are replaced, under the state-dict
names niels-gpt uses (ln1, ln2, ln_f with `.weight` only; mlp.fc_a, mlp.fc_g, mlp.fc_out).
"""

import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import niels_gpt  # noqa: E402  (path set up just above)

# Token-native chat (docs/ARCHITECTURE.md, generation 2): the special pieces' ids.
ROLE_IDS = {"system": 3, "user": 4, "assistant": 5}
EOT_ID = 6
# While generating these get probability 0: the model must not open a turn itself.
BANNED_IDS = (3, 4, 5)

NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) * weight, over the last axis; no bias, no mean subtraction."""

    def __init__(self, C, eps=NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(C))                   # [C]

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """fc_out(silu(fc_g(x)) * fc_a(x)): fc_g is the gate, fc_a the linear branch."""

    def __init__(self, cfg):
        super().__init__()
        C, d_ff = cfg["C"], cfg["d_ff"]
        self.fc_a = nn.Linear(C, d_ff)                              # [d_ff, C], [d_ff]
        self.fc_g = nn.Linear(C, d_ff)                              # [d_ff, C], [d_ff]
        self.fc_out = nn.Linear(d_ff, C)                            # [C, d_ff], [C]

    def forward(self, x):
        return self.fc_out(F.silu(self.fc_g(x)) * self.fc_a(x))


class Block2(niels_gpt.Block):
    """Generation 1's pre-norm block with RMSNorm and SwiGLU in place of LayerNorm and GELU."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.ln1 = RMSNorm(cfg["C"])
        self.ln2 = RMSNorm(cfg["C"])
        self.mlp = SwiGLU(cfg)


class NielsGPT2(niels_gpt.NielsGPT):
    """Generation 1's model with generation 2's blocks and final norm; forward is inherited.

    Replacing a submodule keeps its place in the module order, so the state dict lists its
    keys in the order niels-gpt's own model does.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.blocks = nn.ModuleList(Block2(cfg) for _ in range(cfg["L"]))
        self.ln_f = RMSNorm(cfg["C"])


# ---------------------------------------------------------------------------------------
# Checkpoint: generation 2's `best.pt` dict
# ---------------------------------------------------------------------------------------

def raw_model_settings(cfg):
    """A settings dump like the one niels-gpt keeps in model_cfg["_raw"]: the converter
    ignores it for the model, but it must be readable (nested dicts, lists, None, bools)."""
    return {"V": cfg["V"], "T": cfg["T"], "C": cfg["C"], "L": cfg["L"], "H": cfg["H"],
            "d_ff": cfg["d_ff"], "dropout": cfg["dropout"], "rope_theta": cfg["rope_theta"],
            "norm_type": "rmsnorm", "mlp_type": "swiglu", "attention": "mha",
            "norm_eps": NORM_EPS, "tie_weights": True, "init": {"std": 0.02, "scheme": None},
            "layers": [{"index": i} for i in range(cfg["L"])]}


def save_checkpoint(path, model, tokenizer_sha256, train_cfg=None, step=None,
                    best_val_loss=None, optimizer_state=None, device_tag=None):
    """Writes generation 2's `best.pt`: model_cfg (the eight fields plus `_raw`), train_cfg
    (with `_raw` and `_settings_meta.tokenizer_sha256`), model_state, optimizer_state, step
    and best_val_loss, the last three possibly None, as niels-gpt saves them.

    device_tag (e.g. "cuda:0") records that storage location for every tensor, as a
    checkpoint saved from a GPU does, without needing one: the converter must ignore it.
    """
    cfg = niels_gpt.make_config(**{k: model.cfg[k] for k in niels_gpt.CONFIG_KEYS})
    state = niels_gpt.shared_cpu_state(model)
    train = dict(niels_gpt._plain(train_cfg or {}))
    train["_raw"] = {"lr": 3e-4, "batch_size": 8, "amp": False, "tokenizer_path": "spm.model"}
    train["_settings_meta"] = {"tokenizer_sha256": tokenizer_sha256, "schema": 2, "note": None}
    ckpt = {
        "model_cfg": {**cfg, "_raw": raw_model_settings(cfg)},
        "train_cfg": train,
        "model_state": state,
        "optimizer_state": optimizer_state,
        "step": None if step is None else int(step),
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
    }
    if device_tag is None:
        torch.save(ckpt, path)
        return
    entry = (1, lambda storage: device_tag, lambda storage, location: None)
    torch.serialization._package_registry.insert(0, entry)  # ahead of the CPU tagger
    try:
        torch.save(ckpt, path)
    finally:
        torch.serialization._package_registry.remove(entry)


def load_checkpoint(path, dtype=torch.float32):
    """Loads a generation-2 `best.pt` into a NielsGPT2 in eval mode (float64 for references)."""
    ckpt = torch.load(path, map_location="cpu")
    cfg = {k: v for k, v in ckpt["model_cfg"].items() if k != "_raw"}
    model = NielsGPT2(cfg)
    model.load_state_dict(ckpt["model_state"])
    return model.to(dtype).eval(), ckpt


# ---------------------------------------------------------------------------------------
# Token-native chat and generation, the reference way: the last T ids re-run every step,
# positions from 0 at the window's first id.
# ---------------------------------------------------------------------------------------

def format_ids(messages, encode):
    """[role] + encode(content) + [eot] per message, then the generation prompt [assistant]."""
    ids = []
    for role, content in messages:
        ids += [ROLE_IDS[role]] + list(encode(content)) + [EOT_ID]
    return ids + [ROLE_IDS["assistant"]]


def process_logits(logits, history, repetition_penalty=1.0):
    """Banned ids, then the repetition penalty: every distinct id of history (prompt and
    generated so far) has its logit divided by the penalty, whatever its sign."""
    out = logits.clone()
    out[list(BANNED_IDS)] = float("-inf")
    if repetition_penalty != 1.0:
        seen = sorted(set(history))
        out[seen] = out[seen] / repetition_penalty
    return out


def sampling_distribution(logits, history, temperature, top_k=None, top_p=1.0,
                          repetition_penalty=1.0):
    """The distribution a token is drawn from (temperature > 0), in the order of
    docs/ARCHITECTURE.md: banned ids, repetition penalty, temperature, top-k, then top-p
    (the smallest set of most likely tokens whose probability reaches top_p, including the
    one that crosses it), softmax."""
    x = process_logits(logits, history, repetition_penalty) / temperature
    if top_k is not None and top_k < x.numel():
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        probs = F.softmax(x, dim=-1)
        order = torch.sort(probs, descending=True, stable=True).indices
        cum = torch.cumsum(probs[order], dim=0)
        n_keep = int((cum < top_p).sum()) + 1                       # the crossing one too
        drop = order[n_keep:]
        x[drop] = float("-inf")
    return F.softmax(x, dim=-1)
