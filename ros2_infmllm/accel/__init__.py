"""Decode accelerators: fused projections, compiled and owned decode steps, CUDA graphs.

Why a package of their own: they are not model adapters. They rewrite a loaded model in
place for one-token decoding and drive the bounded cache through its public API only;
the engine's fast path (``fast_decode``) and the benchmarks use them.
"""
