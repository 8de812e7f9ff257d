"""The assessment domain, pure: the framework as data, scoring, assessments, observations, the roster file.

Nothing here touches a database, Kafka or HTTP; the handlers load what a decision needs, call in
here, and append the events that come back.
"""
