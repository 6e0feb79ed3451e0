"""Media backends: how offers, answers and candidates are handled for a room."""
