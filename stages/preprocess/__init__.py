"""Preprocess: letterbox decoded frames into the detect stage's model input, in workers or in
the decode processes (`LetterboxSender`)."""

from stages.preprocess.stage import LetterboxSender, PreprocessStage, PreprocessStageConfig

__all__ = ["LetterboxSender", "PreprocessStage", "PreprocessStageConfig"]
