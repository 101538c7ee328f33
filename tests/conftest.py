import torch

# Small problems run faster on one thread (torch op overhead dominates).
torch.set_num_threads(1)
