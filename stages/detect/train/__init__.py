"""`edgestream train`: YOLO-NAS training and fine-tuning (loss, assigner, data, loop)."""
