from streaming.event_time import END_OF_TIME
from streaming.joiner.clocks import ImpressionClock


def test_impression_clock_follows_a_watermark_the_impressions_vouch_for():
    clock = ImpressionClock(out_of_orderness_ms=5)
    assert clock.at(100) == -END_OF_TIME          # no impression read yet: nothing known
    clock.on_impression(100)
    assert clock.at(90) == 90                      # <= newest - out_of_orderness
    assert clock.at(95) == 95
    assert clock.at(96) == 95                      # ahead of what the impressions vouch for
    assert clock.at(10**12) == 95                  # an action input far ahead: no effect
    clock.on_impression(50)                        # an older impression moves nothing
    assert clock.at(10**12) == 95
    clock.on_impression(10**12 + 5)                # the impressions caught up
    assert clock.at(10**12) == 10**12
    assert clock.at(80) == 10**12                  # never goes back


def test_impression_clock_ends_with_the_input():
    clock = ImpressionClock(out_of_orderness_ms=5)
    assert clock.at(END_OF_TIME) == END_OF_TIME    # a bounded input's final watermark
