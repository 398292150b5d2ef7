"""What SmartMoving's codes mean to LGM (stages, job types): read by the transform, the checks and the schema alike."""
