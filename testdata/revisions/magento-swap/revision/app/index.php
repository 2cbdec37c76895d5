<?php echo "magento";
