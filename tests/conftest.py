"""Every test starts from the same route state, whatever the caller's environment or earlier tests did: no route
policy or disk cache from the environment, no policy set in-process, an empty in-process route cache."""
import pytest


@pytest.fixture(autouse=True)
def _clean_route_state(monkeypatch):
    from flora_mm.adapters import routes
    for name in ('FLORA_MM_ROUTE_POLICY', 'FLORA_MM_ROUTE_CACHE', 'FLORA_MM_ROUTE_REPS'):
        monkeypatch.delenv(name, raising=False)
    routes.set_policy(None)
    routes.clear_cache()
    yield
    routes.set_policy(None)
    routes.clear_cache()
