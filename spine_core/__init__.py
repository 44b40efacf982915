"""SpineReview domain core: imaging, labels, consensus, adjudication, models.

Importable and testable without Streamlit (pages are thin views on top of it).
"""

__version__ = "0.1.0"
