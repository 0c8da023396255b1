"""augmentation stage."""
