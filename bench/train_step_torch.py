"""One fine-tuning step of a BERT encoder + linear head in PyTorch (the reference for
`lmfuse bench train-step`): same model folder, batch of B texts × T tokens, mean pooling,
dropout 0.1 (train mode), cross-entropy, AdamW (lr 2e-5, weight decay 0.01). Prints JSON with
the median seconds of forward, backward, optimiser and the whole step."""

import argparse
import json
import time

import torch
from transformers import AutoModel

p = argparse.ArgumentParser()
p.add_argument("--model", required=True)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--tokens", type=int, default=64)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()

torch.manual_seed(7)
torch.set_num_threads(a.threads)
model = AutoModel.from_pretrained(a.model)
model.train()
head = torch.nn.Linear(model.config.hidden_size, 2)
params = list(model.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr=2e-5, weight_decay=0.01)
ids = torch.randint(1000, model.config.vocab_size, (a.batch, a.tokens))
ids[:, 0] = 101
ids[:, -1] = 102
mask = torch.ones_like(ids)
labels = torch.arange(a.batch) % 2
fw, bw, op, all_ = [], [], [], []
for i in range(a.steps + 2):
    t0 = time.perf_counter()
    out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = out.mean(dim=1)
    loss = torch.nn.functional.cross_entropy(head(torch.nn.functional.dropout(pooled, 0.1)), labels)
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    if i >= 2:
        fw.append(t1 - t0)
        bw.append(t2 - t1)
        op.append(t3 - t2)
        all_.append(t3 - t0)


def med(v):
    return sorted(v)[len(v) // 2]


print(json.dumps({
    "engine": f"pytorch {torch.__version__}",
    "model": a.model,
    "threads": a.threads,
    "batch": a.batch,
    "tokens": a.tokens,
    "steps": a.steps,
    "forward": med(fw),
    "backward": med(bw),
    "optimizer": med(op),
    "step": med(all_),
}))
