
# Only the training is faked: the batch scripts' supervision (trainer.supervisor) is the real one.
import os as _os

__path__.append(_os.path.join(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.dirname(
    _os.path.dirname(_os.path.abspath(__file__)))))), "trainer"))
