"""HTTP routes as Chalice blueprints: parse → service call → JSON. Routes never touch a backend."""
