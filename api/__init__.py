"""REST API of the dispatcher: tenant and platform routes on aiohttp."""
