"""Dev tooling: tiny self-made models, synthetic DuIE data, the demo model and test services.

Nothing here is imported by the product at run time except ``devkit.assets`` (pure Python),
which ``triplets demo`` uses to find the committed demo model. Modules that need torch
(``devkit.tiny``, ``devkit.demo_training``) import it themselves.
"""
