"""Distributed workloads on torch.distributed: spawned ranks and torchrun sessions."""
