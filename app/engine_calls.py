"""What the model picker calls in the engine, and the types those calls return.

Views import from the engine only its plain data (engine.api); the calls that read files and
probe memory come through the adapter, engine/qt_worker.py, and reach the views from here, so
they stay listed in one place (tests/test_architecture.py holds both rules).
"""

from __future__ import annotations

from engine.qt_worker import (
    MemoryEstimate,
    ModelInfo,
    ProjectorInfo,
    Verdict,
    ensure_demo_model,
    estimate_memory,
    free_memory_bytes,
    inspect_model,
    inspect_projector,
    memory_verdict,
    projector_beside,
    projector_memory,
)

__all__ = [
    "MemoryEstimate",
    "ModelInfo",
    "ProjectorInfo",
    "Verdict",
    "ensure_demo_model",
    "estimate_memory",
    "free_memory_bytes",
    "inspect_model",
    "inspect_projector",
    "memory_verdict",
    "projector_beside",
    "projector_memory",
]
