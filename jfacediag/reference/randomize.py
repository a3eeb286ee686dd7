"""Random weights *and* random BatchNorm statistics for a PyTorch reference, so parity tests exercise every tensor."""
import torch


def randomize_(model, seed=0):
  """In place: BN scale/bias/mean/var and PReLU slopes drawn at random (defaults would hide transposition bugs)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.6 + 0.7)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
        m.num_batches_tracked.fill_(1000)
      elif isinstance(m, torch.nn.PReLU):
        m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.3 + 0.05)
  return model
