"""The networks the poster publishes to, besides X (:mod:`bmsuploader.post.publishing`).

Each module here is one network's edge: its :class:`~bmsuploader.post.rules.PostRules`
(``RULES``), the names of the secrets it reads under the destination's SSM path
(``SECRET_NAMES``), and a publisher class whose ``publish`` turns every answer of
the network into a :class:`~bmsuploader.post.networks.base.PublishResult` or a typed
error of :mod:`bmsuploader.contract.errors`. The modules are imported only when a
destination of that kind is configured, so an X-only poster pays nothing for them.
"""
