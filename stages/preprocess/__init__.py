"""Preprocess workers: letterbox decoded frames into the detect stage's model input."""

from stages.preprocess.stage import PreprocessStage, PreprocessStageConfig

__all__ = ["PreprocessStage", "PreprocessStageConfig"]
