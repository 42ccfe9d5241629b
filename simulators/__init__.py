"""Simulated participants: banks that pay, answer and misbehave on demand, for tests and load."""

from simulators.bank import Behaviour, FinalStatus, SentPayment, SimulatedBank

__all__ = ["Behaviour", "FinalStatus", "SentPayment", "SimulatedBank"]
