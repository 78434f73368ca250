"""Benchmarks live beside the tests but run only when asked for:

    python -m pytest benchmarks/bench_encoder.py --benchmark-json benchmarks/results/encoder-cpu.json
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
