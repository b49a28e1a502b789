"""The MONAI Label app's parts: task config, infer and train tasks, datastore, class labels."""
