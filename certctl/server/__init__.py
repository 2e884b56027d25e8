"""The control plane: its HTTPS listener, the API application and their composition."""
