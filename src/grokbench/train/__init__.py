"""Training: settings (`config`), tensors (`data`), the loop (`trainer`), one run end to end (`run`),
several seeds trained together (`packed`)."""
