"""Evaluation suite: perplexity, long-memory QA, rosbag replay, benchmarks, reports."""
