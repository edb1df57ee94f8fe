"""Building blocks the model families share: action tokenizer, sentence encoder, vision encoders
(FiLM-EfficientNet, ResNet keypoints), TokenLearner, the 1-D U-Net, and pure image metrics."""
