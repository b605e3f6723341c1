"""Hyperscan compile, one-pass scan and streaming scan across chunk borders."""

from nexus.policy.scan.compile import CompileError
from nexus.policy.scan.core import Match
from nexus.policy.scan.scanner import Scanner, rules_hash
from nexus.policy.scan.stream import StreamScan

__all__ = ["CompileError", "Match", "Scanner", "StreamScan", "rules_hash"]
