"""Chain mode (#16): provider fees and on-chain order checks, as Ocean Provider v2 does them.

Pure and synchronous: `rpc` speaks JSON-RPC over an injected transport (urllib by default, never
aiohttp), `abi` encodes the few calls and decodes the few events the checks need, `fees` quotes
and signs provider fees exactly as ERC20Template._checkProviderFee verifies them, and `orders`
checks an order transaction in Provider's order. `gate` runs those off the event loop with a
bounded time for the engine and the API.
"""
