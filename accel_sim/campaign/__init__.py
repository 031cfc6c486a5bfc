"""Layer 5: campaigns — TOML definitions, planning, local and Dask execution, results, reports."""

from accel_sim.campaign.config import CampaignConfig, campaign_from_dict, load_campaign
from accel_sim.campaign.runner import Focus, Job, build_context, plan_jobs, run_campaign, run_job
from accel_sim.campaign.store import ResultsStore, read_results, write_csv

__all__ = [
    "CampaignConfig", "Focus", "Job", "ResultsStore", "build_context", "campaign_from_dict", "load_campaign", "plan_jobs",
    "read_results", "run_campaign", "run_job", "write_csv",
]
