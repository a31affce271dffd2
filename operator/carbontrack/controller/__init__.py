"""kopf handlers only, one module per concern, all registered by controller.registration."""
