"""Chaos harness: faults injected into real hub and device processes in network namespaces,
judged by an independent checker."""
