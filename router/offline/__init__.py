"""What runs without a real deployment: the offline demo (``demo``), the built-in echo
provider (``echo``, ``answers``), the routing simulation and its frontier plot
(``simulate``, ``plot``) and the CLI commands that use them (``commands``). The request
path never imports this package."""
