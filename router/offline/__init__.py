"""What runs without a real deployment: the offline demo (``demo``), the built-in echo
provider (``echo``, ``answers``), the routing simulation and its frontier plot
(``simulate``, ``plot``) the decision reports (``reports``) and the CLI commands that serve nothing
(``commands``). The request
path never imports this package."""
